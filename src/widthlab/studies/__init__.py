"""The journal's studies, one module each; each configures the engine and reads the store.

- :mod:`widthlab.studies.variance` (journal sections 1-3 and FashionMNIST): is the distribution
  of per-neuron activation std a proxy for the right layer width?
"""

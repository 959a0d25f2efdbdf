"""Layers and models: the MLP bank, layers that learn their width, width lists.

One file per layer family:

- ``bank.py``: :class:`MLPBank` (many MLPs trained at once), :class:`ModelSpec`, :class:`MLP`;
- ``modifiers.py``: the :class:`Modifier` interface that plugs width-learning layers into a bank;
- ``flexible.py``: the sigmoid cut-off layer that learns its width (:class:`FlexibleLinear`,
  :class:`FlexibleMLP`, bank modifier :class:`FlexibleCutoff`, the closed-form penalty
  :func:`cutoff_integral`);
- ``gated.py``: the sparsifier, per-neuron gates under an L1 penalty that remove dead neurons
  (:class:`GatedLinear`, :class:`GatedMLP`, bank modifier :class:`SparsifierGate`);
- ``growth.py``: :class:`GrowingGate`, a sparsifier gate whose price also adds units
  (with :meth:`MLPBank.grow_`): a layer that grows and shrinks under one price;
- ``surgery/``: learned widths of a user's own model: :func:`gate_layers` puts gates on its
  ``nn.Linear`` units and ``nn.Conv2d`` channels (placed from the units core's trace of an
  ``example`` batch) or on units-core groups, :func:`shrink_` removes dead units from the
  layer and every consumer with :func:`widthlab.units.remove_units`, optimizer state sliced;
- ``lenet.py``: LeNet-300-100 and LeNet-5-Caffe as plain ``nn.Module`` s, gated as the
  learned-width papers count widths (:func:`~widthlab.nn.lenet.build_lenet`), and the weights a
  row's widths imply (``from widthlab.nn.lenet import build_lenet, lenet_weights``);
- ``resnet.py``: a CIFAR-style ResNet-20 for 1x28x28 images as a plain ``nn.Module``
  (:class:`ResNet`, :class:`ResNetConfig` with every stage's and block's width, its parameter
  and multiply-add counts);
- ``widths.py``: the journal's sqrt(2) width grid;
- ``gpt.py``: a character-level GPT (nanoGPT's architecture, FFN width ``n_ffn`` free, tied
  head by default): :class:`GPTConfig`, :class:`GPT`, :func:`build_gpt`; ``gpt_train.py``: AdamW
  with warm-up and cosine decay, :func:`train_step`, :func:`evaluate_gpt`, :func:`train_gpt`;
  ``gpt_fused.py``: :class:`FusedGPT`, several same-shape GPTs trained as one (batched GEMMs),
  the same numbers as training them one after another.

Public API::

    from widthlab.nn import MLP, MLPBank, ModelSpec, Modifier, NeuronGate, parse_widths
    from widthlab.nn import FlexibleLinear, FlexibleMLP, FlexibleCutoff, cutoff_integral
    from widthlab.nn import GatedLinear, GatedMLP, SparsifierGate, GrowingGate
    from widthlab.nn import gate_layers, shrink_, size_penalty, gate_widths
    from widthlab.nn import GPT, GPTConfig, GPTTrain, FusedGPT, build_gpt, train_step
    from widthlab.nn import ResNet, ResNetConfig
"""

from widthlab.nn.bank import MLP, MLPBank, ModelSpec, init_mlp
from widthlab.nn.flexible import FlexibleCutoff, FlexibleLinear, FlexibleMLP, cutoff_integral
from widthlab.nn.gated import GatedLinear, GatedMLP, SparsifierGate
from widthlab.nn.gpt import GPT, GPTConfig, build_gpt
from widthlab.nn.gpt_fused import FusedGPT, train_fused
from widthlab.nn.gpt_train import (
    GPTTrain,
    evaluate_gpt,
    lr_at,
    make_optimizer,
    train_gpt,
    train_step,
)
from widthlab.nn.growth import BenefitRule, GrowingGate
from widthlab.nn.modifiers import Modifier, NeuronGate
from widthlab.nn.resnet import ResNet, ResNetConfig
from widthlab.nn.surgery import (
    SignFlipRule,
    UnitGate,
    gate_layers,
    gate_widths,
    shrink_,
    size_penalty,
)
from widthlab.nn.widths import parse_widths, sqrt2_widths

__all__ = ["GPT", "MLP", "BenefitRule", "FlexibleCutoff", "FlexibleLinear", "FlexibleMLP",
           "FusedGPT", "GPTConfig", "GPTTrain", "GatedLinear", "GatedMLP", "GrowingGate",
           "MLPBank", "ModelSpec", "Modifier", "NeuronGate", "ResNet", "ResNetConfig",
           "SignFlipRule", "SparsifierGate", "UnitGate", "cutoff_integral",
           "gate_layers", "gate_widths", "init_mlp", "parse_widths", "shrink_", "size_penalty",
           "sqrt2_widths", "build_gpt", "evaluate_gpt", "lr_at", "make_optimizer", "train_fused",
           "train_gpt", "train_step"]

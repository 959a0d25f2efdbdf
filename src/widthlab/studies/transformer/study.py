"""The transformer study (issue 31): how many FFN neurons and heads does a character-level GPT
on Shakespeare need? The journal's width sweep on the FFN with its per-neuron statistics, the
frontier of the trained model under every ranking (one-shot and fine-tuned) with the
whole-network allocation, and widths learned by gates during training against static models
of the same widths trained from scratch. Steps in :mod:`.config` and :mod:`.compute`; the
tables, verdicts and figures read the store only.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from widthlab.store import Store
from widthlab.studies.base import Figure, Section, Study, Tables, Verdicts, display_name
from widthlab.studies.transformer import analysis as an
from widthlab.studies.transformer import figures as fg
from widthlab.studies.transformer import verdicts as vd
from widthlab.studies.transformer.config import NAME, PROFILES, TransformerProfile, steps

INTRO = ("A GPT as nanoGPT writes it (pre-norm blocks, fused qkv and causal attention, GELU "
         "FFN, learned positions, tied head, no biases, dropout 0), trained with AdamW "
         "(warm-up then cosine) on random windows of the training split, characters as "
         "tokens. Losses are nats per character on the validation split (the last 10% of the "
         "text). Gated runs carry per-unit gates on every block's FFN neurons (and heads when "
         "gate_heads), priced per parameter the unit carries during a window of the steps; "
         "dead units are removed after every chunk of steps with AdamW's state kept.")


class TransformerStudy(Study):
    """FFN neurons and heads of a character-level GPT: the journal's sweep and statistics, the
    frontier of every ranking, and learned widths against static models."""

    name = NAME
    title = "How many FFN neurons and heads does a transformer need? A character GPT"
    journal_budget = "not run in the journal (its networks had one hidden layer, on MNIST)"
    profiles = PROFILES
    datasets = ("shakespeare",)
    print_columns = ("kind", "price", "widths", "ffn_params", "val_loss", "static_val_loss",
                     "dense_val_loss")

    def experiments(self, profile: TransformerProfile, dataset: str) -> list:
        return steps(profile)

    def own_data(self, path):
        """``--data corpus.txt``: a UTF-8 text, characters as tokens."""
        from widthlab.data import load_text

        return load_text(path)

    def tables(self, store: Store, runs: Mapping[str, Mapping[str, str]]) -> Tables:
        out: Tables = {}
        for d, by_exp in runs.items():
            r = an.unit_runs(store, by_exp)
            sweep = an.sweep_table(store, r)
            out[d] = {"sweep": sweep,
                      "stats": an.stats_table(store, r["stats"], sweep) if "stats" in r
                      else pd.DataFrame(),
                      "frontier": an.frontier_table(store, r["frontier"]) if "frontier" in r
                      else pd.DataFrame(),
                      "gated": an.gated_table(store, r),
                      "curves": an.curves_table(store, r),
                      "samples": an.samples_table(store, r["samples"]) if "samples" in r
                      else pd.DataFrame(),
                      "budget": an.budget(store, r),
                      "runs": list(dict.fromkeys([*by_exp.values(), *r.values()]))}
        return out

    def verdicts(self, tables: Tables) -> Verdicts:
        out: Verdicts = {}
        for d, t in tables.items():
            f = t["frontier"]
            out[d] = [vd.plateau(t["sweep"]), vd.proxy_tracks_plateau(t["stats"]),
                      vd.dead_grows(t["stats"]),
                      vd.obs_wins(f, "ffn", 0.5, within=0.03), vd.obs_wins(f, "ffn", 0.25,
                                                                           within=0.10),
                      vd.obs_wins(f, "ffn", 0.5, col="loss_ft"), vd.obs_wins(f, "heads", 0.5),
                      vd.allocation_wins(f, 0.5), vd.learned_widths(t["gated"])]
        return out

    def sections(self, tables: Tables, verdicts: Verdicts) -> list[Section]:
        out = []
        for d, t in tables.items():
            name = display_name(d)
            samples = t["samples"]
            lines = "".join(f"\n\n[{r.step}, {r.why}: val loss {r.val_loss:.4f}, "
                            f"{r.ffn_params} FFN parameters]\n{r.text}"
                            for r in samples.itertuples()) if not samples.empty else ""
            out.append(Section(
                title=f"FFN neurons and heads of a character GPT: {name}",
                intro=INTRO + (f"\n\nGenerated text (temperature 0.8):{lines}" if lines else ""),
                verdicts=verdicts.get(d, []), run_ids=t["runs"], budget=t["budget"],
                figures=[Figure(f"{d}-sweep", f"{name}: loss and the journal's statistics "
                                "against FFN width",
                                lambda t=t, n=name: fg.sweep(t["sweep"], t["stats"], n)),
                         Figure(f"{d}-frontier", f"{name}: every ranking, one-shot and "
                                "fine-tuned", lambda t=t, n=name: fg.frontier(t["frontier"], n)),
                         Figure(f"{d}-learned", f"{name}: learned widths against static "
                                "models", lambda t=t, n=name: fg.learned(t["gated"],
                                                                          t["sweep"], n)),
                         Figure(f"{d}-curves", f"{name}: training of the gated and static "
                                "models", lambda t=t, n=name: fg.curves(t["curves"], n))],
                tables=[("FFN-width sweep", t["sweep"].round(4)),
                        ("per-neuron statistics per FFN width", t["stats"].round(4)),
                        ("frontier (loss: one-shot; loss_ft: after the fine-tune)",
                         t["frontier"].round(4)),
                        ("learned widths against static models", t["gated"].round(4))]))
        return out

    def summary(self, tables: Tables) -> dict[str, pd.DataFrame]:
        return {f"transformer-{d}-learned": t["gated"].round(4) for d, t in tables.items()}


STUDY = TransformerStudy()

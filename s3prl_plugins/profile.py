"""Parameter count and MACs of an upstream, in the protocol of the SUPERB challenge.

``python -m s3prl_plugins.profile <entry> -k CKPT [-g CONFIG]`` builds the upstream exactly as
``run_downstream.py -u <entry>`` does and reports:

* ``params``: the parameters of the upstream module alone (no Featurizer, no downstream head);
* ``macs``: multiply-accumulates of the upstream forward summed over the utterance lengths of the
  SUPERB @ SLT 2022 challenge profiler (32 LibriSpeech test-clean utterances, 1.28-20.38 s, 224.86 s
  in all, each forwarded alone as a batch of one), and ``macs_per_second`` = ``macs / 224.86 s``.

MACs come from :class:`torch.utils.flop_counter.FlopCounterMode` (FLOPs / 2 of every matrix
product, convolution and attention product). ``docs/superb.md`` documents the protocol and how it
reproduces the published 1669 G of HuBERT Base exactly (``--reference hubert_base
--attention-terms``). MACs of these models depend on the input length only, so random audio of the
protocol's lengths stands in for the LibriSpeech files.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from . import compat

__all__ = [
    "SUPERB_CHALLENGE_LENGTHS", "SAMPLE_RATE", "ProfileResult", "count_macs", "count_parameters",
    "profile_upstream", "build_upstream", "build_reference", "REFERENCE_MODELS", "HubertBaseReference", "main",
]

SAMPLE_RATE = 16000

#: Lengths (samples at 16 kHz) of the 32 LibriSpeech test-clean utterances that the SUPERB @ SLT
#: 2022 challenge profiler forwards one at a time: the (82 i + 1)-th of the 2620 files sorted by
#: length, i = 0..31. Their sum is 224.86 s. HuBERT Base gives 1,669,156,022,848 MACs on them.
SUPERB_CHALLENGE_LENGTHS: tuple[int, ...] = (
    20560, 34560, 38480, 42560, 45600, 48720, 52000, 55120, 59120, 62720, 66400, 71200, 75200, 78640,
    82800, 87520, 92720, 98560, 104400, 111120, 118480, 125040, 132720, 142640, 154000, 166720, 180880,
    197920, 217920, 239280, 268160, 326000,
)
#: The published values for HuBERT Base (SUPERB challenge profiler; ARMHuBERT/STaR papers: 1669 G).
HUBERT_BASE_PUBLISHED = {"macs": 1_669_156_022_848, "params": 94_697_600}


class ProfileError(ValueError):
    """A profile that cannot be made (bad lengths, a model that fails on the protocol's inputs)."""


@dataclass
class ProfileResult:
    name: str
    params: int
    #: MACs summed over every utterance (matrix products, convolutions, attention products)
    macs: int
    #: element-wise attention terms that the challenge profiler counts for nn.MultiheadAttention
    attention_terms: int
    total_seconds: float
    lengths: list[int]
    per_utterance_macs: list[int] = field(repr=False)
    device: str = "cpu"

    @property
    def macs_per_second(self) -> float:
        return self.macs / self.total_seconds

    @property
    def macs_with_mha_terms(self) -> int:
        """``macs`` plus the element-wise attention terms that the challenge profiler counts for
        ``nn.MultiheadAttention`` (not for attention written with matmul/softmax)."""
        return self.macs + self.attention_terms

    def per_second_range(self) -> tuple[float, float]:
        rates = [m / (n / SAMPLE_RATE) for m, n in zip(self.per_utterance_macs, self.lengths)]
        return min(rates), max(rates)

    def to_dict(self) -> dict:
        low, high = self.per_second_range()
        out = asdict(self)
        out.update(macs_per_second=self.macs_per_second, macs_with_mha_terms=self.macs_with_mha_terms,
                   min_macs_per_second=low, max_macs_per_second=high)
        return out


def count_parameters(module) -> int:
    """Parameters of ``module`` (shared tensors once), trainable or not."""
    return sum(p.numel() for p in module.parameters())


class _AttentionTerms:
    """Counts, per ``scaled_dot_product_attention`` call, the element-wise terms that the challenge's
    DeepSpeed-based profiler adds for ``nn.MultiheadAttention`` on top of the products: input
    projection bias (3 per query element), query scaling (1), mask (1 per score), softmax (2 per
    score) and attention dropout (1 per score; counted there whenever the module has p > 0)."""

    def __init__(self):
        self.total = 0

    @contextlib.contextmanager
    def recording(self):
        import torch.nn.functional as F
        from torch.overrides import TorchFunctionMode

        terms = self

        class _Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if func is F.scaled_dot_product_attention:
                    q, k = args[0], args[1]
                    *batch, t_q, head_dim = q.shape
                    t_k = k.shape[-2]
                    heads_batch = 1
                    for b in batch:
                        heads_batch *= b
                    terms.total += 4 * heads_batch * t_q * head_dim + 4 * heads_batch * t_q * t_k
                return func(*args, **kwargs)

        with _Mode():
            yield


def count_macs(model, wavs: Sequence, *, attention_terms: bool = False) -> tuple[int, int]:
    """``(macs, attention_terms)`` of one ``model(wavs)`` call under ``torch.no_grad``."""
    counter = compat.flop_counter()
    terms = _AttentionTerms()
    with torch.no_grad(), counter, (terms.recording() if attention_terms else contextlib.nullcontext()):
        model(list(wavs))
    return counter.get_total_flops() // 2, terms.total


def _check_lengths(lengths: Iterable[int]) -> list[int]:
    lengths = [int(n) for n in lengths]
    if not lengths:
        raise ProfileError("no utterance lengths given; pass --seconds or use the default SUPERB protocol")
    bad = [n for n in lengths if n < 800]
    if bad:
        raise ProfileError(f"utterance lengths {bad} (samples) are shorter than 0.05 s = 800 samples; "
                           "s3prl pads such inputs, so profile lengths of at least 800 samples")
    return lengths


def profile_upstream(model, *, name: str = "upstream", lengths: Iterable[int] = SUPERB_CHALLENGE_LENGTHS,
                     device: str = "cpu", attention_terms: bool = True, seed: int = 0,
                     progress: Callable[[int, int], None] | None = None) -> ProfileResult:
    """Profile ``model`` (an s3prl upstream) over ``lengths``, one utterance per forward.

    ``device="meta"`` counts shapes only (seconds instead of minutes) for models whose forward
    never reads data values; real devices run the actual computation.
    """
    lengths = _check_lengths(lengths)
    model = model.eval().to(device)
    generator = torch.Generator().manual_seed(seed)
    per_utterance, terms_total = [], 0
    for i, n in enumerate(lengths):
        wav = torch.randn(n, generator=generator).to(device)
        try:
            macs, terms = count_macs(model, [wav], attention_terms=attention_terms)
        except (NotImplementedError, RuntimeError) as error:
            if str(device) == "meta":
                raise ProfileError(f"{name} cannot run on the meta device ({error}); profile with --device cpu") from error
            raise
        per_utterance.append(macs)
        terms_total += terms
        if progress is not None:
            progress(i + 1, len(lengths))
    return ProfileResult(name=name, params=count_parameters(model), macs=sum(per_utterance),
                         attention_terms=terms_total, total_seconds=sum(lengths) / SAMPLE_RATE,
                         lengths=lengths, per_utterance_macs=per_utterance, device=str(device))


def build_upstream(entry: str, ckpt: str | None = None, model_config: str | None = None, refresh: bool = False):
    """The module ``run_downstream.py -u entry -k ckpt -g model_config`` would use."""
    from . import hub

    if entry not in hub.__all__:
        known = ", ".join(hub.__all__)
        failed = "".join(f"\n  ({family} failed to load: {err!r})" for family, err in hub.FAILED_FAMILIES.items())
        raise ProfileError(f"unknown entry {entry!r}; the plugin entries are: {known}{failed}")
    return getattr(hub, entry)(ckpt=ckpt, model_config=model_config, refresh=refresh)


class HubertBaseReference(nn.Module):
    """A random-weight HuBERT Base (torchaudio's ``hubert_base``: CNN + 12 post-LN layers) in
    s3prl's upstream shape: ``forward(wavs)`` -> ``hidden_states`` of every layer, rate 320."""

    def __init__(self, model: nn.Module | None = None):
        super().__init__()
        import torchaudio

        #: any torchaudio Wav2Vec2Model (a smaller one for smoke tests); HuBERT Base by default
        self.model = model if model is not None else torchaudio.models.hubert_base()

    def get_downsample_rates(self, key: str) -> int:
        return 320

    def forward(self, wavs):
        lengths = torch.tensor([len(w) for w in wavs], device=wavs[0].device)
        padded = nn.utils.rnn.pad_sequence(list(wavs), batch_first=True)
        states, _ = self.model.extract_features(padded, lengths if len(wavs) > 1 else None)
        return {"hidden_states": states, "last_hidden_state": states[-1]}


#: reference models that are not plugin entries (``--reference NAME``)
REFERENCE_MODELS: dict[str, Callable] = {"hubert_base": HubertBaseReference}


def build_reference(name: str):
    if name not in REFERENCE_MODELS:
        raise ProfileError(f"unknown reference model {name!r}; one of {sorted(REFERENCE_MODELS)}")
    return REFERENCE_MODELS[name]()


def _format_g(value: float) -> str:
    return f"{value / 1e9:,.2f} G"


def format_report(result: ProfileResult) -> str:
    low, high = result.per_second_range()
    lines = [
        f"upstream:            {result.name}",
        f"params:              {result.params:,} ({result.params / 1e6:.2f} M)",
        f"utterances:          {len(result.lengths)} ({min(result.lengths) / SAMPLE_RATE:.2f}-"
        f"{max(result.lengths) / SAMPLE_RATE:.2f} s, {result.total_seconds:.2f} s in all, batch 1 each)",
        f"MACs (sum):          {result.macs:,} ({_format_g(result.macs)})",
        f"MACs per second:     {_format_g(result.macs_per_second)} (per utterance {_format_g(low)}-{_format_g(high)})",
    ]
    if result.attention_terms:
        lines.append(f"MACs + MHA terms:    {result.macs_with_mha_terms:,} ({_format_g(result.macs_with_mha_terms)}; what the "
                     "challenge profiler reports when the attention is nn.MultiheadAttention, e.g. fairseq HuBERT)")
    return "\n".join(lines)


def parse_seconds(text: str) -> list[int]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--seconds takes comma-separated numbers, e.g. 1,5,10 ({error})")
    return [int(round(v * SAMPLE_RATE)) for v in values]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m s3prl_plugins.profile",
        description="Upstream-only parameter count and MACs of an s3prl-plugins entry (or a reference model), "
                    "summed over the SUPERB challenge's 32 utterance lengths (224.86 s) and per second of "
                    "speech. See docs/superb.md for the protocol.",
        epilog="examples:\n  python -m s3prl_plugins.profile melhubert_local -k melhubert.ckpt\n"
               "  python -m s3prl_plugins.profile --reference hubert_base --device meta\n"
               "  python -m s3prl_plugins.profile m2d_local -k m2d.pth --seconds 1,10,30 --json out.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("entry", nargs="?", help="plugin entry name as given to run_downstream.py -u")
    parser.add_argument("-k", "--ckpt", help="checkpoint, as run_downstream.py -k")
    parser.add_argument("-g", "--model_config", help="model config yaml, as run_downstream.py -g")
    parser.add_argument("-r", "--refresh", action="store_true", help="download the checkpoint again")
    parser.add_argument("--reference", choices=sorted(REFERENCE_MODELS),
                        help="profile a random-weight reference model instead of an entry")
    parser.add_argument("--seconds", type=parse_seconds,
                        help="comma-separated utterance durations in seconds instead of the SUPERB set")
    parser.add_argument("--device", default="cpu",
                        help="cpu (default), cuda, or meta (shape-only counting in seconds; works for --reference, "
                             "not for entries whose forward reads input values, e.g. to reject NaN)")
    parser.add_argument("--no-attention-terms", dest="attention_terms", action="store_false",
                        help="do not add the challenge profiler's element-wise attention terms")
    parser.add_argument("--json", help="also write the full result (per-utterance MACs) to this JSON file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.entry is None) == (args.reference is None):
        parser.error("give exactly one of: an entry name, or --reference NAME")
    lengths = args.seconds if args.seconds is not None else SUPERB_CHALLENGE_LENGTHS
    try:
        if args.reference:
            # on meta, build directly there: no time spent on random initialisation
            with torch.device("meta") if args.device == "meta" else contextlib.nullcontext():
                model = build_reference(args.reference)
            name = f"reference:{args.reference}"
        else:
            model, name = build_upstream(args.entry, args.ckpt, args.model_config, args.refresh), args.entry
        result = profile_upstream(model, name=name, lengths=lengths, device=args.device,
                                  attention_terms=args.attention_terms,
                                  progress=lambda i, n: print(f"\r  utterance {i}/{n}", end="", file=sys.stderr))
    except (ProfileError, ValueError, FileNotFoundError) as error:
        print(file=sys.stderr)
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(file=sys.stderr)
    print(format_report(result))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result.to_dict(), handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Every lip-sync generator the product knows, by id: one entry per model, data only. The ONE place for a
model's facts: its architecture, default weights and the variable that overrides them, batch, crop, UI defaults.

Model identity travels through the app, the services, the pipeline, the CLIs and the bench as one of these ids
(``"wav2lip96"``, ``"wav2lip256"``, ``"livetalking384"``, ``"paper384"``), never as an int size. ``96``, ``256`` and
``384`` stay accepted as aliases of ``wav2lip96``, ``wav2lip256`` and ``paper384`` (:data:`ALIASES`, :func:`get`).

Adding a model:
1. one :class:`ModelSpec` entry below (its weights variable ``DH_<NAME>_CHECKPOINT`` needs no settings field:
   ``common.settings.Settings.from_env`` reads every such variable into ``lipsync_weights``, and
   :meth:`ModelSpec.weights_spec` falls back to ``default_weights``);
2. if it is a new architecture, its data in :mod:`wav2lip384.models.config` (``GeneratorConfig.for_arch``);
3. its test rows: ``tests/test_golden.py`` ``CASES`` (when the reference code's golden outputs exist in
   ``../shared/reference/golden``) and the key-for-key shapes in ``tests/test_weights.py`` (when the public
   checkpoint's shapes are in ``../shared/reference``); ``tests/test_models.py`` checks ``params_m``/``gflops``.
Nothing else: the pipeline's batch, the pickers, the Compare tab, Status, the weights loader, the CLIs and the
bench read this table (``tests/test_layers.py::test_the_registry_is_the_only_place_for_model_facts`` checks that no
other module names a model id as a special case.)

Crop policies (what the face crop fed to the model looks like; implemented in :mod:`wav2lip384.faces.crop`):
- ``"stretch"``: the original Wav2Lip's detector box with pads (top, bottom, left, right) = (0, 10, 0, 0), resized
  (stretched, aspect ratio not kept) to the model's square input. The public checkpoints were trained on this.
- ``"square"``: the paper's rule (§2.1.1): a square whose bottom edge is the (padded) box's bottom edge, centred
  horizontally on the box. Only for ``paper384``, whose weights are trained by our own trainer on such crops.

UI defaults: ``render_rank`` / ``answer_rank`` order the models a picker pre-selects (the first one whose weights
are available wins; 0 = never pre-selected): rendering a video favours a sharper mouth, answers that stream
favour speed. ``compare`` puts the model in the Compare tab's default selection.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from common.errors import UserFacingError
from wav2lip384.faces.crop import CROP_POLICIES, DEFAULT_PADS

__all__ = ["CROP_POLICIES", "ModelSpec", "MODELS", "ALIASES", "DEFAULT_MODEL", "canonical_id", "get", "ids",
           "preferred", "compare_default", "weights_variables", "weights_settings",
           "unknown_weights_variables"]


@dataclass(frozen=True)
class ModelSpec:
    id: str
    title: str  # short label for pickers and tables
    arch: str  # key of GeneratorConfig.for_arch
    img_size: int  # square model input/output side
    env_var: str  # the variable that overrides the weights: DH_<NAME>_CHECKPOINT (common.settings reads it)
    default_weights: str  # 'owner/name:path/in/repo', a local path, or "" (none published)
    # frames per generator call on CPU, the pipeline's default (larger gains little and costs memory: the 384
    # models keep ~20 MB of encoder features per frame in flight)
    batch: int
    crop: str  # "stretch" | "square" (module docstring)
    pads: tuple[int, int, int, int]  # detector-box pads (top, bottom, left, right) in pixels of the frame
    output: str  # output activation of the last layer
    license: str  # licence of the default weights ("" when there are none)
    source: str  # where the architecture and weights come from (one line)
    params_m: float  # parameters, millions (checked by tests against the built model)
    gflops: float  # GFLOP per frame of the full forward pass (2 x MACs, convs only)
    quality: str  # one honest line on what to expect
    trainable: bool = False  # our trainer can train it (wav2lip384.train)
    no_weights: str = ""  # why no weights are published (only when default_weights is "")
    render_rank: int = 0  # UI default for rendering a video: 1 = pre-selected first (module docstring)
    answer_rank: int = 0  # UI default for streamed answers: 1 = pre-selected first
    compare: bool = False  # in the Compare tab's default selection

    def weights_spec(self, settings) -> str:
        """The weights to load under ``settings`` (a ``common.settings.Settings``): the deployment's ``env_var``
        when it is set (an empty value switches the model off), else ``default_weights``."""
        override = settings.lipsync_weights.get(self.env_var)
        return self.default_weights if override is None else str(override)

    def config(self):
        """The architecture as a ``GeneratorConfig`` (frozen data)."""
        from wav2lip384.models.config import GeneratorConfig

        return GeneratorConfig.for_arch(self.arch)

    def to_dict(self) -> dict:
        return asdict(self)


_ORIGINAL_PADS = DEFAULT_PADS  # (0, 10, 0, 0): the original Wav2Lip's

MODELS: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in (
        ModelSpec(
            id="wav2lip96",
            title="Wav2Lip 96",
            arch="wav2lip96",
            img_size=96,
            env_var="DH_WAV2LIP96_CHECKPOINT",
            default_weights="camenduru/Wav2Lip:checkpoints/wav2lip_gan.pth",
            batch=32,
            crop="stretch",
            pads=_ORIGINAL_PADS,
            output="sigmoid",
            license="research/non-commercial (Rudrabha/Wav2Lip terms)",
            source="Prajwal et al. 2020, Rudrabha/Wav2Lip (wav2lip_gan.pth, mirrored on the Hub)",
            params_m=36.3,
            gflops=7.93,
            quality="The reference lip-sync model: accurate sync, but the mouth is a blurry 96x96 patch.",
            render_rank=2,
            answer_rank=1,
            compare=True,
        ),
        ModelSpec(
            id="wav2lip256",
            title="Wav2Lip 256 (community)",
            arch="wav2lip_v2_256",
            img_size=256,
            env_var="DH_WAV2LIP256_CHECKPOINT",
            default_weights="Kedreamix/Linly-Talker:checkpoints/wav2lipv2.pth",
            batch=16,
            crop="stretch",
            pads=_ORIGINAL_PADS,
            output="sigmoid",
            license="MIT (per the Linly-Talker repo's metadata)",
            source="community Wav2Lip-v2 at 256x256 (lipku/LiveTalking code), weights from Kedreamix/Linly-Talker",
            params_m=53.6,
            gflops=55.6,
            quality="Plain Wav2Lip design at 256x256: a sharper mouth than 96; community-trained, not peer reviewed.",
            render_rank=1,
            answer_rank=2,
            compare=True,
        ),
        ModelSpec(
            id="livetalking384",
            title="Wav2Lip 384 + SAM (community)",
            arch="livetalking384_sam",
            img_size=384,
            env_var="DH_LIVETALKING384_CHECKPOINT",
            default_weights="Pypa/wav2lip384:wav2lip384.pth",
            batch=8,
            crop="stretch",
            pads=_ORIGINAL_PADS,
            output="sigmoid",
            license="Apache-2.0 (Hub tag)",
            source="lipku/LiveTalking wav2lip384 with spatial attention (SAM), weights from Pypa/wav2lip384",
            params_m=172.7,
            gflops=161.4,
            quality="384x384 with spatial attention; community reports say the mouth does not close well.",
            render_rank=3,
            compare=True,
        ),
        ModelSpec(
            id="paper384",
            title="Paper 384 (your weights)",
            arch="paper384",
            img_size=384,
            env_var="DH_WAV2LIP384_CHECKPOINT",
            default_weights="",
            batch=8,
            crop="square",
            pads=_ORIGINAL_PADS,
            output="sigmoid",
            license="",
            source="the paper's 384x384 generator (appendices 2-3); train it with `python -m wav2lip384.train`",
            params_m=39.5,
            gflops=7.75,
            quality="The paper's architecture; no weights were published, so it runs only with weights you train.",
            trainable=True,
            no_weights="the paper did not release any",
        ),
    )
}

# short names (CLIs, bench entry names such as "ours_256_video"); 96 and 384 are the sizes the paper names
ALIASES = {"96": "wav2lip96", "256": "wav2lip256", "384": "paper384"}
DEFAULT_MODEL = "wav2lip96"


def canonical_id(model: str | int) -> str:
    """``96`` -> ``"wav2lip96"``, ``"384"`` -> ``"paper384"``; ids pass through; anything else is a clear error."""
    key = str(model).strip()
    key = ALIASES.get(key, key)
    if key not in MODELS:
        known = ", ".join(list(MODELS) + [f"{a} (= {t})" for a, t in ALIASES.items()])
        raise UserFacingError(f"Unknown lip-sync model {model!r}. Known models: {known}.")
    return key


def get(model: str | int) -> ModelSpec:
    """The registry entry of a model id or alias."""
    return MODELS[canonical_id(model)]


def ids() -> list[str]:
    return list(MODELS)


def preferred(use: str) -> tuple[str, ...]:
    """Model ids a picker pre-selects for ``use`` ("render" | "answer"), best first (``render_rank`` /
    ``answer_rank``); the caller takes the first one whose weights are available."""
    if use not in ("render", "answer"):
        raise ValueError(f"use must be 'render' or 'answer', not {use!r}")
    ranked = [(getattr(s, f"{use}_rank"), s.id) for s in MODELS.values() if getattr(s, f"{use}_rank") > 0]
    return tuple(mid for _, mid in sorted(ranked))


def compare_default() -> tuple[str, ...]:
    """The Compare tab's default selection (entries with ``compare=True``, in registry order)."""
    return tuple(s.id for s in MODELS.values() if s.compare)


def weights_variables() -> dict[str, str]:
    """{variable: model id} of every model's weights variable (for status pages and the README check)."""
    return {s.env_var: s.id for s in MODELS.values()}


def weights_settings(settings) -> dict[str, str]:
    """{variable: weights spec in effect} for every model under ``settings`` (the registry default unless the
    deployment set the variable): what a configuration panel shows next to ``settings.describe()``."""
    return {s.env_var: s.weights_spec(settings) for s in MODELS.values()}


def unknown_weights_variables(settings) -> list[str]:
    """Weights variables set in ``settings`` that no model reads (a typo such as ``DH_WAV2LIP_96_CHECKPOINT``):
    the app logs them at start-up instead of ignoring them silently."""
    known = weights_variables()
    return sorted(v for v in settings.lipsync_weights if v not in known)

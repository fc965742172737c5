"""Every lip-sync generator the product knows, by id: one entry per model, data only.

Model identity travels through the app, the services, the pipeline, the CLIs and the bench as one of these ids
(``"wav2lip96"``, ``"wav2lip256"``, ``"livetalking384"``, ``"paper384"``), never as an int size. ``96`` and ``384``
stay accepted as aliases of ``wav2lip96`` and ``paper384`` (:func:`get`). Adding a model = one entry below plus
its architecture in :mod:`wav2lip384.models.config` (``GeneratorConfig.for_arch``).

Crop policies (what the face crop fed to the model looks like):
- ``"stretch"``: the original Wav2Lip's detector box with pads (top, bottom, left, right) = (0, 10, 0, 0), resized
  (stretched, aspect ratio not kept) to the model's square input. The public checkpoints were trained on this.
- ``"square"``: the paper's rule (§2.1.1): a square whose bottom edge is the (padded) box's bottom edge, centred
  horizontally on the box. Only for ``paper384``, whose weights are trained by our own trainer on such crops.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from common.errors import UserFacingError

CROP_POLICIES = ("stretch", "square")


@dataclass(frozen=True)
class ModelSpec:
    id: str
    title: str  # short label for pickers and tables
    arch: str  # key of GeneratorConfig.for_arch
    img_size: int  # square model input/output side
    settings_field: str  # the Settings field (env DH_<FIELD>) holding the weights spec
    default_weights: str  # 'owner/name:path/in/repo', a local path, or "" (none published)
    crop: str  # "stretch" | "square" (module docstring)
    pads: tuple[int, int, int, int]  # detector-box pads (top, bottom, left, right) in pixels of the frame
    output: str  # output activation of the last layer
    license: str  # licence of the default weights ("" when there are none)
    source: str  # where the architecture and weights come from (one line)
    params_m: float  # parameters, millions (checked by tests against the built model)
    gflops: float  # GFLOP per frame of the full forward pass (2 x MACs, convs only)
    quality: str  # one honest line on what to expect
    trainable: bool = False  # our trainer can train it (wav2lip384.train)

    @property
    def env_var(self) -> str:
        return "DH_" + self.settings_field.upper()

    def weights_spec(self, settings) -> str:
        """The weights spec configured in ``settings`` (a ``common.settings.Settings``)."""
        return str(getattr(settings, self.settings_field) or "")

    def config(self):
        """The architecture as a ``GeneratorConfig`` (frozen data)."""
        from wav2lip384.models.config import GeneratorConfig

        return GeneratorConfig.for_arch(self.arch)

    def to_dict(self) -> dict:
        return asdict(self)


_ORIGINAL_PADS = (0, 10, 0, 0)

MODELS: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in (
        ModelSpec(
            id="wav2lip96",
            title="Wav2Lip 96",
            arch="wav2lip96",
            img_size=96,
            settings_field="wav2lip96_checkpoint",
            default_weights="camenduru/Wav2Lip:checkpoints/wav2lip_gan.pth",
            crop="stretch",
            pads=_ORIGINAL_PADS,
            output="sigmoid",
            license="research/non-commercial (Rudrabha/Wav2Lip terms)",
            source="Prajwal et al. 2020, Rudrabha/Wav2Lip (wav2lip_gan.pth, mirrored on the Hub)",
            params_m=36.3,
            gflops=7.93,
            quality="The reference lip-sync model: accurate sync, but the mouth is a blurry 96x96 patch.",
        ),
        ModelSpec(
            id="wav2lip256",
            title="Wav2Lip 256 (community)",
            arch="wav2lip_v2_256",
            img_size=256,
            settings_field="wav2lip256_checkpoint",
            default_weights="Kedreamix/Linly-Talker:checkpoints/wav2lipv2.pth",
            crop="stretch",
            pads=_ORIGINAL_PADS,
            output="sigmoid",
            license="MIT (per the Linly-Talker repo's metadata)",
            source="community Wav2Lip-v2 at 256x256 (lipku/LiveTalking code), weights from Kedreamix/Linly-Talker",
            params_m=53.6,
            gflops=55.6,
            quality="Plain Wav2Lip design at 256x256: a sharper mouth than 96; community-trained, not peer reviewed.",
        ),
        ModelSpec(
            id="livetalking384",
            title="Wav2Lip 384 + SAM (community)",
            arch="livetalking384_sam",
            img_size=384,
            settings_field="livetalking384_checkpoint",
            default_weights="Pypa/wav2lip384:wav2lip384.pth",
            crop="stretch",
            pads=_ORIGINAL_PADS,
            output="sigmoid",
            license="Apache-2.0 (Hub tag)",
            source="lipku/LiveTalking wav2lip384 with spatial attention (SAM), weights from Pypa/wav2lip384",
            params_m=172.7,
            gflops=161.4,
            quality="384x384 with spatial attention; community reports say the mouth does not close well.",
        ),
        ModelSpec(
            id="paper384",
            title="Paper 384 (your weights)",
            arch="paper384",
            img_size=384,
            settings_field="wav2lip384_checkpoint",
            default_weights="",
            crop="square",
            pads=_ORIGINAL_PADS,
            output="sigmoid",
            license="",
            source="the paper's 384x384 generator (appendices 2-3); train it with `python -m wav2lip384.train`",
            params_m=39.5,
            gflops=7.75,
            quality="The paper's architecture; no weights were published, so it runs only with weights you train.",
            trainable=True,
        ),
    )
}

ALIASES = {"96": "wav2lip96", "384": "paper384"}
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

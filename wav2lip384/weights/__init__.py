"""Find, load and save lip-sync weights; convert training checkpoints for inference.

Modules: ``io`` (state dicts, key-for-key load, our format: save/from_pretrained, what a spec names),
``cache`` (Hub download, the safetensors copies of ``.pth`` files), ``provenance`` (which weights exactly:
hashes, Hub commit), ``load`` (generators by registry id, experts by size, status without downloading),
``checkpoints`` (the one reader of training checkpoints). The public names are re-exported here.

Generators are loaded by registry id (:mod:`wav2lip384.models.registry`)::

    gen = load_generator("wav2lip256", device="cpu", cache_dir=Path("~/.cache/digital-human/weights"))
    gen.load_info  # LoadInfo: where the tensors came from, both file sizes, download / read / convert times
    generator_status("livetalking384", spec)  # WeightsStatus, never downloads
    weights_provenance("livetalking384", spec).describe()  # Hub repo, file, commit, sha256 (or a local path)

Formats read:
- **public** Wav2Lip-family ``.pth`` files (``wav2lip_gan.pth``, ``wav2lipv2.pth``, ``wav2lip384.pth``,
  ``lipsync_expert.pth``): a pickled dict of tensors at the top level, or under ``"state_dict"`` next to
  ``"optimizer"`` / ``"global_step"`` / ``"global_epoch"`` (ignored), possibly saved from ``nn.DataParallel``
  (``module.`` prefixes, stripped). Read with ``torch.load(weights_only=True)``, which refuses pickled code.
  The first load of such a file writes a weights-only safetensors copy into ``cache_dir`` (named by the source's
  real path, size and modification time, so a changed file is converted again); later loads read the copy.
- **ours**: a directory with ``model.safetensors`` + ``config.json`` (the architecture as data, so a
  checkpoint always rebuilds the network it was trained as). Written by :func:`save_pretrained`.
- **training checkpoints** of ``python -m wav2lip384.train`` (:func:`model_from_checkpoint`, :func:`load_expert`).

A *spec* is a local file or directory, or a Hub reference: ``owner/name:path/in/repo.pth`` for one file,
``owner/name`` for a repo in our format. Hub access goes through :mod:`common.hub` (offline fails at once) and
every failure to get a generator's weights is one :class:`UserFacingError` naming the repo, the file and the
environment variable to set.
"""

from __future__ import annotations

from wav2lip384.weights.cache import CACHE_FORMAT, ProgressFn  # noqa: F401
from wav2lip384.weights.checkpoints import (  # noqa: F401
    TRAINING_CHECKPOINT_FORMAT,
    load_expert,
    model_from_checkpoint,
    read_training_checkpoint,
)
from wav2lip384.weights.io import (  # noqa: F401
    CONFIG_NAME,
    FORMAT_NAME,
    FORMAT_VERSION,
    NO_DISCRIMINATOR,
    NO_SYNCNET,
    PICKLE_SUFFIXES,
    WEIGHTS_NAME,
    from_pretrained,
    load_state_dict_file,
    load_state_dict_strict,
    save_pretrained,
    state_dict_from_object,
    state_dict_problems,
)
from wav2lip384.weights.load import (  # noqa: F401
    LoadInfo,
    WeightsStatus,
    generator_config,
    generator_status,
    how_to_get,
    load_generator,
    load_model,
    load_syncnet,
)
from wav2lip384.weights.provenance import (  # noqa: F401
    HASH_NOW_BYTES,
    FileHashes,
    HubCachedFile,
    Provenance,
    file_sha256,
    hub_blob_sha256,
    hub_cached_file,
    weights_provenance,
)

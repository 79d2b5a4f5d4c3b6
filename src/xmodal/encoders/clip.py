"""open_clip models: images and texts in one space.

Spec forms (after the ``open_clip:`` prefix):

- ``ViT-B-32/laion2b_s34b_b79k``: a built-in architecture and a pretrained tag, downloaded on first use;
- ``local-dir:/path``: a folder with ``open_clip_config.json`` and a checkpoint;
- ``hf-hub:org/repo``: an open_clip repository on the Hugging Face hub;
- ``ViT-B-32@/path/to/weights.safetensors``: a built-in architecture with a local checkpoint;
- ``/path/to/weights.safetensors``: a checkpoint with ``open_clip_config.json`` beside it.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from xmodal.config import JpegDecode
from xmodal.encoders.base import Encoder, EncoderOptions, fast_token_starts
from xmodal.encoders.device import inference_context, resolve_device
from xmodal.encoders.hub import hub_offline_reason
from xmodal.errors import ConfigError, WeightsUnavailableError
from xmodal.modality import Modality

if TYPE_CHECKING:  # open_clip, torch and torchvision load with the model: a search that needs none pays nothing
    import torch

    from xmodal.encoders.jpeg import ClipPreprocess, EncodedJpeg

_CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
LOCAL_OPTIONS = (
    "use a local checkpoint: XMODAL_CLIP_ENCODER='open_clip:ViT-B-32@/path/to/weights.safetensors'",
    "use a folder with open_clip_config.json and weights: XMODAL_CLIP_ENCODER='open_clip:local-dir:/path/to/folder'",
)


@dataclass(frozen=True, slots=True)
class OpenClipSource:
    """Where an open_clip model comes from: an architecture (or schema'd folder/repo) and its weights."""

    model: str
    pretrained: str | None = None
    checkpoint: Path | None = None

    @classmethod
    def parse(cls, target: str) -> OpenClipSource:
        """Parse the part of a spec after ``open_clip:`` (imports open_clip to check architecture and tag)."""
        if not target:
            raise ConfigError("Empty open_clip spec: write e.g. 'open_clip:ViT-B-32/laion2b_s34b_b79k'.")
        if target.startswith(("local-dir:", "hf-hub:")):
            return cls(model=target)
        if "@" in target:
            arch, path = target.split("@", 1)
            return cls(model=arch, checkpoint=Path(path).expanduser())
        if _looks_like_path(target):
            path = Path(target).expanduser()
            if not (path.parent / "open_clip_config.json").is_file():
                raise ConfigError(
                    f"open_clip checkpoint {path} has no open_clip_config.json beside it, so its architecture is "
                    f"unknown. Name it in the spec: 'open_clip:ViT-B-32@{path}'."
                )
            return cls(model=f"local-dir:{path.parent}", checkpoint=path)
        import open_clip

        arch, _, tag = target.partition("/")
        if arch not in open_clip.list_models():
            raise ConfigError(
                f"Unknown open_clip architecture '{arch}'. Known ones: `python -m open_clip --help`"
                f" or open_clip.list_models(); e.g. {', '.join(open_clip.list_models()[:5])}."
            )
        if tag and tag not in open_clip.list_pretrained_tags_by_model(arch):
            known = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
            raise ConfigError(f"open_clip has no pretrained tag '{tag}' for {arch}. Known tags: {known}.")
        return cls(model=arch, pretrained=tag or None)

    def is_cached(self, cache_dir: Path) -> bool:
        """True when loading needs no download."""
        if self.pretrained is None:
            return not self.model.startswith("hf-hub:")
        import open_clip
        from huggingface_hub import try_to_load_from_cache

        cfg = open_clip.get_pretrained_cfg(self.model, self.pretrained)
        repo, filename = os.path.split(cfg.get("hf_hub", "").rstrip("/") + "/")
        repo = repo.rstrip("/")
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        return any(isinstance(try_to_load_from_cache(repo, name, cache_dir=str(cache_dir)), str) for name in names)


def _looks_like_path(target: str) -> bool:
    return target.startswith(("/", "./", "../", "~")) or target.endswith(_CHECKPOINT_SUFFIXES)


class OpenClipEncoder(Encoder):
    """An open_clip model; ``encode_texts`` and ``encode_images`` land in the same space.

    ``target`` (the spec after ``open_clip:``) is parsed and checked when first needed: that imports open_clip,
    which a process that never uses this space should not pay for."""

    modalities = frozenset({Modality.IMAGE, Modality.TEXT})

    def __init__(self, spec: str, target: str | OpenClipSource, options: EncoderOptions) -> None:
        super().__init__(spec, options)
        self._target = target
        self._model: Any = None
        self._preprocess: Any = None
        self._on_device_preprocess: ClipPreprocess | None = None
        self._tokenizer: Any = None
        self._device: torch.device  # set by _load
        self._dim = 0
        self._trim_padding = False

    @property
    def source(self) -> OpenClipSource:
        """Where the model comes from; ``ConfigError`` for an unknown architecture or tag."""
        if not isinstance(self._target, OpenClipSource):
            self._target = OpenClipSource.parse(self._target)
        return self._target

    def _load(self) -> str:
        import open_clip
        import torch

        from xmodal.encoders.jpeg import ClipPreprocess

        source = self.source  # a bad spec is a ConfigError before anything loads
        self._device = resolve_device(self.options.device)
        if not source.is_cached(self.cache_dir):
            reason = hub_offline_reason(self.options.hub_timeout_s)
            if reason is not None:
                raise WeightsUnavailableError(self.spec, str(self.cache_dir), reason, local_options=LOCAL_OPTIONS)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.source.model,
                pretrained=self.source.pretrained or (str(self.source.checkpoint) if self._named_checkpoint else None),
                load_weights=not self._folder_checkpoint,
                cache_dir=str(self.cache_dir),
                device=self._device,
            )
            if self._folder_checkpoint:
                open_clip.load_checkpoint(model, str(self.source.checkpoint))
        except FileNotFoundError as exc:
            raise ConfigError(f"open_clip encoder '{self.spec}': {exc}") from exc
        except (RuntimeError, OSError, ValueError) as exc:
            if self.source.pretrained is not None or self.source.model.startswith("hf-hub:"):
                raise WeightsUnavailableError(
                    self.spec, str(self.cache_dir), str(exc).splitlines()[0], local_options=LOCAL_OPTIONS
                ) from exc
            raise ConfigError(f"open_clip encoder '{self.spec}' failed to load: {exc}") from exc
        model.eval()
        self._model, self._preprocess = model, preprocess
        self._on_device_preprocess = ClipPreprocess.from_config(getattr(model.visual, "preprocess_cfg", {}))
        self._tokenizer = open_clip.get_tokenizer(self.source.model, cache_dir=str(self.cache_dir))
        with inference_context(self._device):
            probe = self._tokenizer(["", "a photo of a red circle on a dark background"]).to(self._device)
            full = model.encode_text(probe)
            self._dim = int(full.shape[-1])
            self._trim_padding = trims_padding(model) and torch.allclose(
                encode_text_unpadded(model, probe), full, atol=1e-4
            )
        return self._fingerprint_model(f"open_clip:{type(model).__name__}:{self._dim}", model)

    def weights_reachable(self) -> bool:
        if self.loaded:
            return True
        # when nothing was ever downloaded here, open_clip (seconds to import) need not say where the weights would be
        never_downloaded = self._names_hub_weights() and not any(self.cache_dir.glob("models--*"))
        if not never_downloaded and self.source.is_cached(self.cache_dir):
            return True
        return hub_offline_reason(self.options.hub_timeout_s) is None

    def _names_hub_weights(self) -> bool:
        """True for an ``ARCH/TAG`` spec not parsed yet (its weights come from the hub, into ``cache_dir``)."""
        target = self._target
        return (
            isinstance(target, str)
            and not target.startswith(("local-dir:", "hf-hub:"))
            and "@" not in target
            and not _looks_like_path(target)
        )

    @property
    def _named_checkpoint(self) -> bool:
        return self.source.checkpoint is not None and not self.source.model.startswith("local-dir:")

    @property
    def _folder_checkpoint(self) -> bool:
        return self.source.checkpoint is not None and self.source.model.startswith("local-dir:")

    @property
    def dim(self) -> int:
        self.load()
        return self._dim

    @property
    def max_text_tokens(self) -> int:
        self.load()
        return int(self._tokenizer.context_length) - 2  # start and end tokens

    def count_tokens(self, text: str) -> int:
        tokenizer = self._tokenizer
        if hasattr(tokenizer, "encoder") and hasattr(tokenizer, "encode"):  # open_clip's own BPE
            return len(tokenizer.encode(text))
        return len(tokenizer.tokenizer(text, add_special_tokens=False)["input_ids"])

    def token_starts(self, text: str) -> list[int] | None:
        tokenizer = self._tokenizer
        if hasattr(tokenizer, "encoder") and hasattr(tokenizer, "encode"):  # open_clip's own BPE: no offsets
            return None
        return fast_token_starts(tokenizer.tokenizer, text)

    def prepare_image(self, image: Image.Image) -> torch.Tensor:
        self.load()
        return self._preprocess(image)

    def prepare_jpeg(self, data: bytes) -> EncodedJpeg | None:
        """The file's bytes, when this encoder decodes JPEGs on its device (CUDA under ``jpeg_decode=auto``)."""
        from xmodal.encoders.jpeg import EncodedJpeg

        self.load()
        if self._on_device_preprocess is None:
            return None
        wanted = self.options.jpeg_decode
        if wanted is JpegDecode.DEVICE or (wanted is JpegDecode.AUTO and self._device.type == "cuda"):
            return EncodedJpeg.from_bytes(data)
        return None

    def _encode_prepared_images(self, prepared: list[torch.Tensor | EncodedJpeg]) -> np.ndarray:
        import torch

        from xmodal.encoders.jpeg import EncodedJpeg, decode_batch

        jpegs = [i for i, item in enumerate(prepared) if isinstance(item, EncodedJpeg)]
        tensors: list[torch.Tensor] = list(prepared)  # type: ignore[arg-type]
        if jpegs:
            assert self._on_device_preprocess is not None
            decoded = decode_batch(
                [prepared[i] for i in jpegs],  # type: ignore[misc]
                self._device,
                self._on_device_preprocess,
                self._preprocess,
            )
            for position, tensor in zip(jpegs, decoded, strict=True):
                tensors[position] = tensor
        on_host = [t.device.type == "cpu" for t in tensors]
        if self._device.type == "cuda" and all(on_host):
            batch = torch.stack(tensors).pin_memory().to(self._device, non_blocking=True)
        else:
            batch = torch.stack([t.to(self._device) for t in tensors])
        with inference_context(self._device):
            return self._model.encode_image(batch).float().cpu().numpy()

    def _encode_queries(self, texts: list[str]) -> np.ndarray:
        tower = self._query_model(self._text_tower, self._device) if self._trim_padding else None
        if tower is None:
            return self._encode_texts(texts)
        tokens = self._tokenizer(texts).to(self._device)
        with inference_context(self._device):
            return encode_text_unpadded(tower, tokens).float().cpu().numpy()

    def _text_tower(self, dtype: torch.dtype) -> TextTower:
        return TextTower.copy_of(self._model, dtype)

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        tokens = self._tokenizer(texts).to(self._device)
        with inference_context(self._device):
            if self._trim_padding:
                return encode_text_unpadded(self._model, tokens).float().cpu().numpy()
            return self._model.encode_text(tokens).float().cpu().numpy()


@dataclass(frozen=True, slots=True)
class TextTower:
    """A copy of a CLIP model's text tower alone, at one dtype: what :func:`encode_text_unpadded` reads of a
    model (the image tower, most of the model, is not copied)."""

    token_embedding: Any
    positional_embedding: Any
    transformer: Any
    ln_final: Any
    text_projection: Any
    attn_mask: Any
    text_pool_type: str
    text_eos_id: int | None

    @classmethod
    def copy_of(cls, model: Any, dtype: torch.dtype) -> TextTower:
        import torch

        def copied(module: torch.nn.Module) -> torch.nn.Module:
            # requires_grad stays as it is (inference_mode turns grad off): with it off, nn.MultiheadAttention
            # takes its "fast path", which ran 5x slower in bfloat16 on a CPU (torch 2.14)
            return copy.deepcopy(module).to(dtype).eval()

        projection = model.text_projection
        if isinstance(projection, torch.nn.Module):
            projection = copied(projection)
        elif projection is not None:
            projection = projection.detach().to(dtype)
        return cls(
            token_embedding=copied(model.token_embedding),
            positional_embedding=model.positional_embedding.detach().to(dtype),
            transformer=copied(model.transformer),
            ln_final=copied(model.ln_final),
            text_projection=projection,
            attn_mask=model.attn_mask.detach().to(dtype),
            text_pool_type=model.text_pool_type,
            text_eos_id=getattr(model, "text_eos_id", None),
        )


def trims_padding(model: Any) -> bool:
    """Whether ``model``'s text tower may skip the padding after the longest text of a batch: with a causal mask
    and the end-of-text token's output as the text's vector, no position before it looks at the padding."""
    import open_clip

    return (
        isinstance(model, open_clip.CLIP)
        and getattr(model, "attn_mask", None) is not None
        and getattr(model, "text_pool_type", None) in {"argmax", "eos"}
    )


def encode_text_unpadded(model: Any, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)`` over only the positions up to the batch's last end-of-text token.

    A short query is ~10 of CLIP's 77 positions, so this is several times less work for the same vectors.
    """
    import torch

    if model.text_pool_type == "argmax":
        ends = tokens.argmax(dim=-1)
    else:
        ends = (tokens == model.text_eos_id).int().argmax(dim=-1)
    length = int(ends.max()) + 1
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens[:, :length]).to(cast_dtype)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)[torch.arange(x.shape[0], device=x.device), ends]
    if model.text_projection is None:
        return x
    if isinstance(model.text_projection, torch.nn.Linear):
        return model.text_projection(x)
    return x @ model.text_projection

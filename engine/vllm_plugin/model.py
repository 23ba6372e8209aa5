"""Step-Audio 2 in vLLM: audio input schema, processor (log-mel, placeholder expansion), model."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Literal

import numpy as np
import torch
from torch import nn
from transformers import BatchFeature
from vllm.config import VllmConfig
from vllm.config.multimodal import MultiModalDummyOptions
from vllm.inputs import MultiModalDataDict
from vllm.model_executor.models.interfaces import MultiModalEmbeddings, SupportsMultiModal
from vllm.model_executor.models.utils import (
    AutoWeightsLoader,
    WeightsMapper,
    init_vllm_registered_model,
    maybe_prefix,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import MultiModalDataItems, MultiModalDataParser
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
    PromptUpdate,
    PromptUpdateDetails,
)
from vllm.sequence import IntermediateTensors
from vllm.utils.tensor_schema import TensorSchema, TensorShape

from engine.adapter import Adapter
from engine.audio import MAX_CHUNK_SAMPLES, SAMPLE_RATE, batch_mels, log_mel, placeholder_count
from engine.config import StepAudio2Config
from engine.encoder import AudioEncoder

AUDIO_PATCH = "<audio_patch>"
AUDIO_START = "<audio_start>"
AUDIO_END = "<audio_end>"
MIN_CPU_HEAD_SIZE = 32  # vLLM's CPU attention fails at the first generate below this


def check_head_size(config: StepAudio2Config, *, on_cpu: bool) -> None:
    """Refuse a decoder whose attention heads vLLM's CPU backend cannot run (clear message)."""
    text = config.text_config
    head_size = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    if on_cpu and head_size < MIN_CPU_HEAD_SIZE:
        raise ValueError(
            f"decoder attention head size {head_size} is below {MIN_CPU_HEAD_SIZE}, the smallest "
            "vLLM's CPU attention supports (hidden_size / num_attention_heads)"
        )


class StepAudio2FeatureInputs(TensorSchema):
    """One encoder item per audio chunk.

    Dimensions:
    - na: number of audio chunks
    - nmb: number of mel bins (128)
    - nf: mel frames of a chunk (100 Hz; differs per chunk)
    """

    type: Literal["audio_features"] = "audio_features"
    input_features: Annotated[
        torch.Tensor | list[torch.Tensor], TensorShape("na", "nmb", "nf", dynamic_dims={"nf"})
    ]
    audio_num_tokens: Annotated[torch.Tensor, TensorShape("na")]


class StepAudio2ProcessingInfo(BaseProcessingInfo):
    """Item limits, token ids (looked up by string) and the largest item."""

    def get_hf_config(self) -> StepAudio2Config:
        return self.ctx.get_hf_config(StepAudio2Config)

    def get_supported_mm_processor_kwargs(self) -> dict[str, set[str]]:
        return {}  # no HF processor: nothing to route

    def get_data_parser(self) -> MultiModalDataParser:
        # scipy: the default resampler (torchaudio) cannot be imported beside this torch.
        return MultiModalDataParser(
            target_sr=SAMPLE_RATE,
            target_channels=1,
            audio_resample_method="scipy",
            expected_hidden_size=self._get_expected_hidden_size(),
            allow_missing_mm_embeddings=self.allow_missing_mm_embeddings,
        )

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"audio": None}

    def token_id(self, token: str) -> int:
        tokenizer = self.get_tokenizer()
        token_id = tokenizer.convert_tokens_to_ids(token)
        if not isinstance(token_id, int) or token_id == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {token!r} token")
        return token_id

    def num_audio_tokens(self, n_samples: int) -> int:
        """`<audio_patch>` count for one chunk (raises ValueError if empty or over ~30 s)."""
        dims = self.get_hf_config().audio_dims
        return placeholder_count(n_samples, dims.kernel_size, dims.adapter_stride)

    def get_mm_max_tokens_per_item(
        self, seq_len: int, mm_counts: Mapping[str, int] | None = None
    ) -> Mapping[str, int]:
        if (mm_counts or {}).get("audio", 0) <= 0:
            return {}
        # The hard per-item limit, not the 25 s the prompt builder cuts at, so that no accepted
        # item can exceed the encoder budget; +2 for <audio_start> and <audio_end>.
        return {"audio": self.num_audio_tokens(MAX_CHUNK_SAMPLES) + 2}


class StepAudio2DummyInputsBuilder(BaseDummyInputsBuilder[StepAudio2ProcessingInfo]):
    """Worst case for memory profiling: each item is the longest chunk."""

    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return AUDIO_PATCH * mm_counts.get("audio", 0)

    def get_dummy_mm_data(
        self,
        seq_len: int,
        mm_counts: Mapping[str, int],
        mm_options: MultiModalDummyOptions,
    ) -> MultiModalDataDict:
        return {
            "audio": self._get_dummy_audios(
                length=MAX_CHUNK_SAMPLES,
                num_audios=mm_counts.get("audio", 0),
                overrides=mm_options.get("audio"),
            )
        }


class StepAudio2MultiModalProcessor(BaseMultiModalProcessor[StepAudio2ProcessingInfo]):
    """16 kHz chunks -> log-mels; each `<audio_patch>` -> `<audio_start> <audio_patch> x n
    <audio_end>`, the n patches receiving the chunk's adapter outputs."""

    def _call_hf_processor(
        self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]
    ) -> BatchFeature:
        audios = hf_data.get("audio", [])
        assert isinstance(audios, list)
        mels, counts = [], []
        for audio in audios:
            samples = np.asarray(audio, dtype=np.float32)
            counts.append(self.info.num_audio_tokens(len(samples)))
            mels.append(log_mel(samples))
        return BatchFeature(
            {"input_features": mels, "audio_num_tokens": torch.tensor(counts, dtype=torch.long)}
        )

    def _get_mm_fields_config(
        self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, MultiModalFieldConfig]:
        return {
            "input_features": MultiModalFieldConfig.batched("audio"),
            "audio_num_tokens": MultiModalFieldConfig.batched("audio", keep_on_cpu=True),
        }

    def _get_prompt_updates(
        self,
        mm_items: MultiModalDataItems,
        hf_processor_mm_kwargs: Mapping[str, object],
        out_mm_kwargs: MultiModalKwargsItems,
    ) -> Sequence[PromptUpdate]:
        patch = self.info.token_id(AUDIO_PATCH)
        start = self.info.token_id(AUDIO_START)
        end = self.info.token_id(AUDIO_END)
        counts = out_mm_kwargs.get_data().get("audio_num_tokens")

        def replacement(item_idx: int) -> PromptUpdateDetails[list[int]]:
            assert isinstance(counts, torch.Tensor)
            full = [start] + [patch] * int(counts[item_idx]) + [end]
            return PromptUpdateDetails.select_token_id(full, embed_token_id=patch)

        return [PromptReplacement(modality="audio", target=[patch], replacement=replacement)]


@MULTIMODAL_REGISTRY.register_processor(
    StepAudio2MultiModalProcessor,
    info=StepAudio2ProcessingInfo,
    dummy_inputs=StepAudio2DummyInputsBuilder,
)
class StepAudio2ForCausalLM(nn.Module, SupportsMultiModal):
    """Whisper-style encoder + adapter feeding vLLM's Qwen2 at the `<audio_patch>` positions."""

    # Released names (spec b.3): the decoder sits under `language_model`; encoder/adapter as-is.
    hf_to_vllm_mapper = WeightsMapper(
        orig_to_new_prefix={
            "model.": "language_model.model.",
            "lm_head.": "language_model.lm_head.",
        }
    )

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("audio"):
            return AUDIO_PATCH
        raise ValueError("Step-Audio 2 takes audio only")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        from vllm.platforms import current_platform

        config: StepAudio2Config = vllm_config.model_config.hf_config
        check_head_size(config, on_cpu=current_platform.is_cpu())
        dims = config.audio_dims
        self.config = config
        with self._mark_tower_model(vllm_config, "audio"):
            self.encoder = AudioEncoder(
                dims.n_mels, dims.n_audio_ctx, dims.n_audio_state, dims.n_audio_head,
                dims.n_audio_layer,
            )
            self.adapter = Adapter(
                dims.n_audio_state, dims.llm_dim, dims.kernel_size, dims.adapter_stride
            )
        with self._mark_language_model(vllm_config):
            self.language_model = init_vllm_registered_model(
                vllm_config=vllm_config,
                hf_config=config.text_config,
                prefix=maybe_prefix(prefix, "language_model"),
                architectures=["Qwen2ForCausalLM"],
            )
        self.make_empty_intermediate_tensors = (
            self.language_model.make_empty_intermediate_tensors
        )

    def _parse_and_validate_audio_input(self, **kwargs: object) -> StepAudio2FeatureInputs | None:
        input_features = kwargs.pop("input_features", None)
        if input_features is None:
            return None
        return StepAudio2FeatureInputs(
            input_features=input_features, audio_num_tokens=kwargs.pop("audio_num_tokens", None)
        )

    def _process_audio_input(self, audio: StepAudio2FeatureInputs) -> tuple[torch.Tensor, ...]:
        features = audio["input_features"]
        mels = list(features) if isinstance(features, torch.Tensor) else features
        weight = next(self.encoder.parameters())
        dtype, device = weight.dtype, weight.device
        batch, lengths = batch_mels([mel.to(device=device, dtype=torch.float32) for mel in mels])
        hidden, enc_lengths = self.encoder(batch.to(dtype), lengths.to(device))
        embeds, tok_lengths = self.adapter(hidden, enc_lengths)
        counts = [int(n) for n in audio["audio_num_tokens"].tolist()]
        if [int(n) for n in tok_lengths.tolist()] != counts:
            raise RuntimeError(
                f"adapter produced {tok_lengths.tolist()} frames for {counts} placeholders"
            )
        return tuple(embeds[i, :n] for i, n in enumerate(counts))

    def embed_multimodal(self, **kwargs: object) -> MultiModalEmbeddings:
        audio = self._parse_and_validate_audio_input(**kwargs)
        if audio is None:
            return []
        return self._process_audio_input(audio)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor | IntermediateTensors:
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.language_model.model(
            input_ids, positions, intermediate_tensors, inputs_embeds=inputs_embeds
        )

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.language_model.compute_logits(hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Load the released tensors; returns the (vLLM-side) names loaded."""
        return AutoWeightsLoader(self).load_weights(weights, mapper=self.hf_to_vllm_mapper)

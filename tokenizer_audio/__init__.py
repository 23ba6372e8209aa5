"""Audio tokens <-> waveforms: S3 tokenizer, speaker embedding, flow matching, HiFT, streaming."""

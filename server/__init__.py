"""Realtime gateway: OpenAI Realtime protocol, sessions, VAD, barge-in, REST and metrics."""

"""Python client of the realtime server: library (`RealtimeClient`) and the `talk` command."""

from clients.python.audio import SAMPLE_RATE, read_wav, write_wav
from clients.python.conversation import Conversation, Turn
from clients.python.playback import SimulatedPlayback
from clients.python.realtime import RealtimeClient, RealtimeConnectionError, session_update

__all__ = [
    "SAMPLE_RATE",
    "Conversation",
    "RealtimeClient",
    "RealtimeConnectionError",
    "SimulatedPlayback",
    "Turn",
    "read_wav",
    "session_update",
    "write_wav",
]

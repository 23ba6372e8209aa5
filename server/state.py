"""The session's turn state machine: idle, user speaking, committed, responding, interrupted."""

from __future__ import annotations

import enum


class TurnState(enum.Enum):
    IDLE = "idle"
    USER_SPEAKING = "user_speaking"
    COMMITTED = "committed"  # a user turn is in the conversation, no response yet
    RESPONDING = "responding"
    INTERRUPTED = "interrupted"  # a response was cancelled by speech; waiting for its end


class TurnEvent(enum.Enum):
    SPEECH_STARTED = "speech_started"
    SPEECH_STOPPED = "speech_stopped"
    COMMITTED = "committed"
    CLEARED = "cleared"
    RESPONSE_STARTED = "response_started"
    RESPONSE_FINISHED = "response_finished"
    BARGE_IN = "barge_in"


class InvalidTransition(RuntimeError):
    pass


# (state, event) -> next state. Anything missing is a bug in the session, not client input:
# client mistakes are caught earlier and answered with error events.
_TRANSITIONS: dict[tuple[TurnState, TurnEvent], TurnState] = {
    (TurnState.IDLE, TurnEvent.SPEECH_STARTED): TurnState.USER_SPEAKING,
    (TurnState.IDLE, TurnEvent.COMMITTED): TurnState.COMMITTED,
    (TurnState.IDLE, TurnEvent.CLEARED): TurnState.IDLE,
    (TurnState.IDLE, TurnEvent.RESPONSE_STARTED): TurnState.RESPONDING,
    (TurnState.USER_SPEAKING, TurnEvent.SPEECH_STOPPED): TurnState.USER_SPEAKING,
    (TurnState.USER_SPEAKING, TurnEvent.COMMITTED): TurnState.COMMITTED,
    (TurnState.USER_SPEAKING, TurnEvent.CLEARED): TurnState.IDLE,
    (TurnState.USER_SPEAKING, TurnEvent.RESPONSE_STARTED): TurnState.RESPONDING,
    (TurnState.COMMITTED, TurnEvent.SPEECH_STARTED): TurnState.USER_SPEAKING,
    (TurnState.COMMITTED, TurnEvent.COMMITTED): TurnState.COMMITTED,
    (TurnState.COMMITTED, TurnEvent.CLEARED): TurnState.COMMITTED,
    (TurnState.COMMITTED, TurnEvent.RESPONSE_STARTED): TurnState.RESPONDING,
    (TurnState.RESPONDING, TurnEvent.BARGE_IN): TurnState.INTERRUPTED,
    (TurnState.RESPONDING, TurnEvent.SPEECH_STARTED): TurnState.RESPONDING,
    (TurnState.RESPONDING, TurnEvent.SPEECH_STOPPED): TurnState.RESPONDING,
    (TurnState.RESPONDING, TurnEvent.COMMITTED): TurnState.RESPONDING,
    (TurnState.RESPONDING, TurnEvent.CLEARED): TurnState.RESPONDING,
    (TurnState.RESPONDING, TurnEvent.RESPONSE_FINISHED): TurnState.IDLE,
    (TurnState.INTERRUPTED, TurnEvent.SPEECH_STARTED): TurnState.INTERRUPTED,
    (TurnState.INTERRUPTED, TurnEvent.RESPONSE_FINISHED): TurnState.USER_SPEAKING,
    (TurnState.INTERRUPTED, TurnEvent.SPEECH_STOPPED): TurnState.INTERRUPTED,
    (TurnState.INTERRUPTED, TurnEvent.COMMITTED): TurnState.INTERRUPTED,
    (TurnState.INTERRUPTED, TurnEvent.CLEARED): TurnState.INTERRUPTED,
}


class TurnStateMachine:
    """Holds the current state; `apply(event)` moves it or raises InvalidTransition."""

    def __init__(self) -> None:
        self.state = TurnState.IDLE

    def apply(self, event: TurnEvent) -> TurnState:
        key = (self.state, event)
        if key not in _TRANSITIONS:
            raise InvalidTransition(f"{event.value} in state {self.state.value}")
        self.state = _TRANSITIONS[key]
        return self.state

    @property
    def responding(self) -> bool:
        return self.state in (TurnState.RESPONDING, TurnState.INTERRUPTED)

"""Audio in LWS: load/validate/resample (float32 mono 16 kHz), TTS with word timings, noise."""

from lws_core.audio.io import (
    SAMPLE_RATE,
    from_pcm16_bytes,
    iter_audio_blocks,
    load_audio,
    pcm16_bytes,
    resample,
    write_wav,
)
from lws_core.audio.tts import TTS, EspeakTTS, Speech, UnspeakableError, VoiceSpec, english_voices, get_tts

__all__ = [
    "SAMPLE_RATE",
    "TTS",
    "EspeakTTS",
    "Speech",
    "UnspeakableError",
    "VoiceSpec",
    "english_voices",
    "from_pcm16_bytes",
    "get_tts",
    "iter_audio_blocks",
    "load_audio",
    "pcm16_bytes",
    "resample",
    "write_wav",
]

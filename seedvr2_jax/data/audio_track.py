"""An input's audio carried into a video output: stream-copied when the output container holds
its codec, transcoded when not (AAC for mp4/mov, Opus for matroska/webm), interleaved with the
video as frames are written and cut at the video's end."""

from __future__ import annotations

import io

import av

from seedvr2_jax.errors import InputError

# Muxer -> the audio encoder used when the input's codec cannot be copied into it.
TRANSCODE_TO = {"mp4": "aac", "mov": "aac", "matroska": "libopus", "webm": "libopus"}


def can_copy(muxer: str, stream: av.audio.stream.AudioStream) -> bool:
  """Whether FFmpeg's `muxer` accepts `stream`'s packets as they are (a trial header write)."""
  trial = av.open(io.BytesIO(), mode="w", format=muxer)
  try:
    trial.add_stream_from_template(stream)
    trial.start_encoding()
    return True
  except (ValueError, av.FFmpegError):
    return False
  finally:
    try:
      trial.close()
    except av.FFmpegError:
      pass  # a container whose header failed may not close cleanly; it holds nothing


class AudioTrack:
  """The first audio stream of `source_path`, added to the output `container` (before its first
  packet is muxed). `mux_until(t)` writes the audio up to t seconds, `finish(t)` the rest up to
  the video's end t and closes the source."""

  def __init__(self, source_path: str, container: av.container.OutputContainer):
    self._source = av.open(source_path)
    self._input = self._source.streams.audio[0]
    muxer = container.format.name
    self.copied = can_copy(muxer, self._input)
    if self.copied:
      self._output = container.add_stream_from_template(self._input)
    else:
      encoder = TRANSCODE_TO[muxer]
      rates = av.Codec(encoder, "w").audio_rates
      rate = self._input.rate if not rates or self._input.rate in rates else max(rates)
      try:
        self._output = container.add_stream(encoder, rate=rate)
        self._output.layout = self._input.layout
      except (ValueError, av.FFmpegError) as e:
        raise InputError(f"{source_path}: its {self._input.codec_context.name} audio cannot be "
                         f"written as {encoder} ({e}); pass --no-audio to drop it") from None
    self.codec = self._output.codec_context.name
    self._packets = self._source.demux(self._input)
    self._held = None  # a packet read past the last limit

  def _next_packet(self):
    if self._held is not None:
      packet, self._held = self._held, None
      return packet
    for packet in self._packets:
      if packet.dts is not None:
        return packet
    return None

  def mux_until(self, container, seconds: float) -> None:
    """Muxes the source's audio that starts before `seconds`."""
    while (packet := self._next_packet()) is not None:
      if packet.pts is not None and packet.pts * packet.time_base >= seconds:
        self._held = packet
        return
      if self.copied:
        packet.stream = self._output
        container.mux(packet)
      else:
        for frame in packet.decode():
          frame.pts = None  # the encoder's resampler numbers samples itself
          container.mux(self._output.encode(frame))

  def finish(self, container, seconds: float) -> None:
    """Muxes the audio up to `seconds` (the video's end), flushes the encoder, closes the
    source."""
    self.mux_until(container, seconds)
    if not self.copied:
      container.mux(self._output.encode(None))
    self.close()

  def close(self) -> None:
    self._source.close()

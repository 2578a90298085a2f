// moonstream order-book frame decoder (docs/formats.md, "Order-book frame"): the JavaScript twin of
// moonstream/publish/frames.py. A frame is a fixed 4,096-byte little-endian record: a 76-byte header
// (struct "<dddddIdddd"), n bid intensities, n ask intensities, zero padding.
// Plain script, no dependencies: defines globalThis.MoonstreamFrames.
"use strict";

(function (global) {
  const RECORD_SIZE = 4096;
  const HEADER_SIZE = 76;
  const MAX_BUCKETS = 1000;

  // [name, byte offset, reader]; uint32 n_buckets at 40 leaves the later float64s unaligned,
  // which is why this goes through a DataView and not a Float64Array.
  const HEADER_FIELDS = [
    ["ts", 0, "f64"],
    ["src", 8, "f64"],
    ["price_min", 16, "f64"],
    ["price_max", 24, "f64"],
    ["step", 32, "f64"],
    ["n_buckets", 40, "u32"],
    ["norm_p50", 44, "f64"],
    ["norm_p95", 52, "f64"],
    ["total_bid", 60, "f64"],
    ["total_ask", 68, "f64"],
  ];

  class FrameFormatError extends Error {
    constructor(message) {
      super(message);
      this.name = "FrameFormatError";
    }
  }

  function asBytes(data) {
    if (data instanceof Uint8Array) return data;
    if (data instanceof ArrayBuffer) return new Uint8Array(data);
    if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    throw new TypeError("expected an ArrayBuffer or a typed array");
  }

  // One record -> {ts, src, price_min, price_max, step, n_buckets, norm_p50, norm_p95, total_bid,
  // total_ask, bid: Uint8Array(n), ask: Uint8Array(n)}; throws FrameFormatError like decode_frame().
  function decodeFrame(data) {
    const bytes = asBytes(data);
    if (bytes.length !== RECORD_SIZE) {
      throw new FrameFormatError(`a frame record is ${RECORD_SIZE} bytes, got ${bytes.length}`);
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const frame = {};
    for (const [name, offset, type] of HEADER_FIELDS) {
      frame[name] = type === "u32" ? view.getUint32(offset, true) : view.getFloat64(offset, true);
    }
    const n = frame.n_buckets;
    if (n < 1 || n > MAX_BUCKETS) throw new FrameFormatError(`n_buckets ${n} outside 1..${MAX_BUCKETS}`);
    for (const [name, , type] of HEADER_FIELDS) {
      if (type === "f64" && !Number.isFinite(frame[name])) throw new FrameFormatError("non-finite header value");
    }
    const end = HEADER_SIZE + 2 * n;
    for (let i = end; i < RECORD_SIZE; i++) {
      if (bytes[i] !== 0) throw new FrameFormatError("non-zero padding");
    }
    // Copies, so a frame does not keep the whole fetched buffer alive.
    frame.bid = bytes.slice(HEADER_SIZE, HEADER_SIZE + n);
    frame.ask = bytes.slice(HEADER_SIZE + n, end);
    return frame;
  }

  // Every record of a concatenation (a minute's .bin or an hourly history chunk).
  function decodeFrames(data) {
    const bytes = asBytes(data);
    if (bytes.length % RECORD_SIZE !== 0) {
      throw new FrameFormatError(`length ${bytes.length} is not a multiple of ${RECORD_SIZE}`);
    }
    const frames = [];
    for (let offset = 0; offset < bytes.length; offset += RECORD_SIZE) {
      frames.push(decodeFrame(bytes.subarray(offset, offset + RECORD_SIZE)));
    }
    return frames;
  }

  // Lower edge of bucket i, computed by index (never by adding step repeatedly).
  function bucketPrice(frame, i) {
    return frame.price_min + i * frame.step;
  }

  // Approximate USD resting in a bucket from its intensity (saturated at norm_p95).
  function intensityUsd(frame, intensity) {
    return (intensity / 255) * frame.norm_p95;
  }

  global.MoonstreamFrames = Object.freeze({
    RECORD_SIZE,
    HEADER_SIZE,
    MAX_BUCKETS,
    FrameFormatError,
    decodeFrame,
    decodeFrames,
    bucketPrice,
    intensityUsd,
  });
})(globalThis);

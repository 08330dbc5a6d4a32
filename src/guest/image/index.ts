/** Checkpoint images: a guest's memory, host-side state and files as one portable, checked blob. */
export {
  IMAGE_FORMAT_VERSION,
  type BaseMemory,
  type DecodeOptions,
  type EncodeOptions,
  type ImageCodec,
  type ImageContents,
  type ImageInfo,
  type ImageMeta,
  type MemorySnapshot,
} from './format.js';
export { encodeImage } from './encode.js';
export {
  decodeImage,
  decodeImageInto,
  decodeImageState,
  inspectImage,
  readImageMeta,
  verifyImage,
  type DecodedInto,
} from './decode.js';
export { applyPages, catchUp, copyLive, restoreMemory, snapshotMemory } from './memory.js';

/**
 * Every failure Roam reports carries a stable `code` (tell errors apart by it, never by message
 * text) and a message that tells the user what to do. Causes are kept.
 */
export type RoamErrorCode =
  // guest programs and bundling
  | 'ROAM_ERR_BUNDLE'
  | 'ROAM_ERR_UNSUPPORTED_BUILTIN'
  // guest sandbox
  | 'ROAM_ERR_GUEST_MEMORY_LIMIT'
  | 'ROAM_ERR_GUEST_CPU_BUDGET'
  | 'ROAM_ERR_GUEST_UNCAUGHT'
  | 'ROAM_ERR_GUEST_STATE'
  | 'ROAM_ERR_SANDBOX'
  // checkpoint images
  | 'ROAM_ERR_IMAGE_TRUNCATED'
  | 'ROAM_ERR_IMAGE_CHECKSUM'
  | 'ROAM_ERR_IMAGE_VERSION'
  | 'ROAM_ERR_IMAGE_TOO_LARGE'
  | 'ROAM_ERR_IMAGE_MALFORMED'
  // an image carried on a link stream (a backup image) that did not arrive whole
  | 'ROAM_ERR_IMAGE_TRANSFER'
  // virtual file system
  | 'ROAM_ERR_VFS_IMAGE'
  // WebAssembly guests: a module that is not valid, or that uses a feature Roam cannot capture
  | 'ROAM_ERR_WASM_MODULE'
  | 'ROAM_ERR_WASM_FEATURE'
  // the proxy, its API and its hosts
  | 'ROAM_ERR_UNAUTHORIZED'
  | 'ROAM_ERR_NOT_FOUND'
  | 'ROAM_ERR_CONFLICT'
  | 'ROAM_ERR_NO_HOST'
  | 'ROAM_ERR_HOST_UNREACHABLE'
  | 'ROAM_ERR_TIMEOUT'
  | 'ROAM_ERR_API'
  // live migration
  | 'ROAM_ERR_MIGRATION'
  | 'ROAM_ERR_PEER_PROTOCOL'
  // work given up because its owner is closing (a host shutting down, say)
  | 'ROAM_ERR_ABORTED'
  // command line and configuration
  | 'ROAM_ERR_USAGE'
  | 'ROAM_ERR_IO';

export class RoamError extends Error {
  override readonly name = 'RoamError';
  readonly code: RoamErrorCode;

  constructor(code: RoamErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

export function isRoamError(err: unknown, code?: RoamErrorCode): err is RoamError {
  return err instanceof RoamError && (code === undefined || err.code === code);
}

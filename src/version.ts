/** The Roam version written into every image; an image restores only on the same version. */
export const ROAM_VERSION = '0.1.0';

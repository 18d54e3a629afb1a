/** Content types by file extension, for files stored without one. */
const BY_EXTENSION: Readonly<Record<string, string>> = {
  jpg: 'image/jpeg', jpeg: 'image/jpeg', png: 'image/png', gif: 'image/gif', webp: 'image/webp',
  avif: 'image/avif', heic: 'image/heic', bmp: 'image/bmp', ico: 'image/x-icon', tif: 'image/tiff',
  tiff: 'image/tiff', svg: 'image/svg+xml', html: 'text/html', htm: 'text/html', txt: 'text/plain',
  css: 'text/css', csv: 'text/csv', js: 'text/javascript', json: 'application/json', xml: 'application/xml',
  pdf: 'application/pdf', zip: 'application/zip', gz: 'application/gzip', mp4: 'video/mp4',
  webm: 'video/webm', mp3: 'audio/mpeg', wasm: 'application/wasm',
}

export const OCTET_STREAM = 'application/octet-stream'

/** The content type for a file name or extension, or undefined. */
export function mimeFromName(name: string | undefined): string | undefined {
  if (!name) return undefined
  const dot = name.lastIndexOf('.')
  return BY_EXTENSION[name.slice(dot + 1).toLowerCase()]
}

/** The type part of a Content-Type header, lower-cased, without parameters. */
export function essence(contentType: string | undefined): string | undefined {
  if (!contentType) return undefined
  const semi = contentType.indexOf(';')
  const type = (semi >= 0 ? contentType.slice(0, semi) : contentType).trim().toLowerCase()
  return type.length > 0 ? type : undefined
}

/**
 * Types a browser would render or run in the page's origin; such uploads are only ever served
 * as attachments, so a stored file cannot script the store's origin.
 */
const ACTIVE = new Set(['text/html', 'application/xhtml+xml', 'image/svg+xml', 'text/xml', 'application/xml', 'text/javascript', 'application/javascript'])

export function isActiveContent(mime: string): boolean {
  // Stored types are already bare and lower-case; others are reduced to their essence first.
  return ACTIVE.has(mime) || ACTIVE.has(essence(mime) ?? '')
}

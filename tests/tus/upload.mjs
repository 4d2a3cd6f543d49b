// Drives confab's tus endpoint with the real tus-js-client (v4, its Node
// build), as a third-party client would: one upload in 1 MiB chunks, then
// one aborted after its first chunk and resumed from where the server says
// it is. Run by tests/e2e/tus.rs; by hand:
//
//   TUS_NODE_DIR=target/tus-node node tests/tus/upload.mjs URL TOKEN FILE
//
// (URL, TOKEN and FILE may also come from CONFAB_URL, CONFAB_TOKEN and
// TUS_FILE.) TUS_NODE_DIR is where `npm install --prefix` put
// tus-js-client, needed unless it resolves from here. Prints, on stdout:
//
//   file-id first <id>
//   resumed-from <offset>
//   file-id resumed <id>
//
// and progress lines on stderr. Exits non-zero on any failure.

import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import path from 'node:path'

const [url, token, file] = [
  process.argv[2] ?? process.env.CONFAB_URL,
  process.argv[3] ?? process.env.CONFAB_TOKEN,
  process.argv[4] ?? process.env.TUS_FILE,
]
if (!url || !token || !file) {
  console.error('usage: node upload.mjs URL TOKEN FILE')
  process.exit(2)
}

/** tus-js-client: from the usual resolution, else from TUS_NODE_DIR. */
async function loadTus () {
  try {
    return await import('tus-js-client')
  } catch (e) {
    if (e.code !== 'ERR_MODULE_NOT_FOUND') throw e
  }
  const dir = process.env.TUS_NODE_DIR
  if (!dir) throw new Error('tus-js-client not found: set TUS_NODE_DIR to where npm installed it')
  // ESM ignores NODE_PATH: resolve from that folder as CommonJS would.
  const require = createRequire(path.join(path.resolve(dir), 'package.json'))
  return require('tus-js-client')
}

/** A urlStorage held in memory, shared by the two uploads of one file. */
class MemoryUrlStorage {
  constructor () { this.items = new Map(); this.next = 0 }
  async findAllUploads () { return [...this.items.values()] }
  async findUploadsByFingerprint (fingerprint) {
    return [...this.items.entries()]
      .filter(([key]) => key.startsWith(`tus::${fingerprint}::`))
      .map(([, upload]) => upload)
  }
  async removeUpload (key) { this.items.delete(key) }
  async addUpload (fingerprint, upload) {
    const key = `tus::${fingerprint}::${this.next++}`
    this.items.set(key, { ...upload, urlStorageKey: key })
    return key
  }
}

const tus = await loadTus()
const bytes = await readFile(file)
const storage = new MemoryUrlStorage()
const MiB = 1024 * 1024

/** Options common to every upload; `hooks` adds callbacks. */
function options (label, hooks) {
  return {
    endpoint: new URL('/api/v1/uploads', url).href,
    headers: { Authorization: `Bearer ${token}` },
    chunkSize: MiB,
    // A failure must show, not be retried away.
    retryDelays: [],
    metadata: { filename: path.basename(file), filetype: 'application/octet-stream' },
    urlStorage: storage,
    storeFingerprintForResuming: true,
    removeFingerprintOnSuccess: true,
    onProgress (sent, total) { console.error(`${label}: ${sent}/${total}`) },
    ...hooks,
  }
}

/** Runs `upload` to its end: the file id its last answer names. */
function finish (upload) {
  return new Promise((resolve, reject) => {
    upload.options.onSuccess = ({ lastResponse }) => {
      const id = lastResponse.getHeader('X-Confab-File-Id')
      if (id) resolve(id)
      else reject(new Error('the last answer has no X-Confab-File-Id'))
    }
    upload.options.onError = reject
    upload.start()
  })
}

// 1. The whole file, chunk after chunk.
const first = new tus.Upload(bytes, options('first', {}))
console.log(`file-id first ${await finish(first)}`)

// 2. Aborted once its first chunk is stored, then resumed by a new Upload
//    that finds the first one's URL in the storage.
const aborted = new tus.Upload(bytes, options('aborted', {}))
await new Promise((resolve, reject) => {
  aborted.options.onChunkComplete = () => {
    aborted.abort().then(resolve, reject)
  }
  aborted.options.onError = reject
  aborted.options.onSuccess = () => reject(new Error('the upload finished before its abort'))
  aborted.start()
})
let resumedFrom = null
const resumed = new tus.Upload(bytes, options('resumed', {
  onAfterResponse (req, res) {
    if (req.getMethod() === 'HEAD' && resumedFrom === null) {
      resumedFrom = Number(res.getHeader('Upload-Offset'))
    }
  },
}))
const previous = await resumed.findPreviousUploads()
if (previous.length !== 1) throw new Error(`expected one previous upload, found ${previous.length}`)
resumed.resumeFromPreviousUpload(previous[0])
const resumedId = await finish(resumed)
if (resumedFrom === null) throw new Error('the resumed upload never asked where it was (HEAD)')
console.log(`resumed-from ${resumedFrom}`)
console.log(`file-id resumed ${resumedId}`)

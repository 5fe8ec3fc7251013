// Picks the document store from y-redis's environment names: S3_ENDPOINT selects S3,
// else POSTGRES selects PostgreSQL, else a per-process memory store.

/** @param {NodeJS.ProcessEnv} env */
export const createStorageFromEnv = async env => {
  if (env.S3_ENDPOINT) {
    const { createS3Storage } = await import('./s3.js')
    console.error(`using S3 storage at ${env.S3_ENDPOINT}`)
    return createS3Storage({
      endPoint: env.S3_ENDPOINT,
      port: env.S3_PORT ? Number(env.S3_PORT) : undefined,
      useSSL: env.S3_SSL === 'true',
      accessKey: env.S3_ACCESS_KEY ?? '',
      secretKey: env.S3_SECRET_KEY ?? '',
      bucket: env.S3_BUCKET || 'ydocs'
    })
  }
  if (env.POSTGRES) {
    const { createPostgresStorage } = await import('./postgres.js')
    console.error('using PostgreSQL storage')
    return createPostgresStorage(env.POSTGRES)
  }
  const { createMemoryStorage } = await import('./memory.js')
  console.error('using in-memory storage (not shared between processes)')
  return createMemoryStorage()
}

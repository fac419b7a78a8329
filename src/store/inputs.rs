//! SQL for `genq.inputs` (an edit's images and mask) and `genq.uploads`
//! (images uploaded through the API).

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};
use std::time::Duration;
use uuid::Uuid;

use super::StoreError;
use crate::input::{Input, Source};
use crate::job::JobState;

/// Writes a job's inputs (in the transaction that wrote the job).
pub async fn insert(
    db: impl PgExecutor<'_>,
    job_id: Uuid,
    inputs: &[Input],
) -> Result<(), StoreError> {
    if inputs.is_empty() {
        return Ok(());
    }
    let mut roles = Vec::new();
    let mut positions = Vec::new();
    let mut uploads: Vec<Option<Uuid>> = Vec::new();
    let mut urls: Vec<Option<String>> = Vec::new();
    let mut from_jobs: Vec<Option<Uuid>> = Vec::new();
    let mut indexes = Vec::new();
    for input in inputs {
        roles.push(input.role.as_str().to_string());
        positions.push(input.position);
        let (upload, url, from_job, index) = match &input.source {
            Source::Upload(id) => (Some(*id), None, None, 0),
            Source::Url(url) => (None, Some(url.clone()), None, 0),
            Source::FromJob { job, index } => (None, None, Some(*job), *index as i32),
        };
        uploads.push(upload);
        urls.push(url);
        from_jobs.push(from_job);
        indexes.push(index);
    }
    sqlx::query!(
        "INSERT INTO genq.inputs (job_id, role, position, upload_id, url, from_job, from_index)
         SELECT $1, * FROM unnest($2::text[], $3::int[], $4::uuid[], $5::text[], $6::uuid[], $7::int[])",
        job_id,
        &roles,
        &positions,
        &uploads as &[Option<Uuid>],
        &urls as &[Option<String>],
        &from_jobs as &[Option<Uuid>],
        &indexes
    )
    .execute(db)
    .await
    .map_err(StoreError::classify)?;
    Ok(())
}

/// A job's inputs: its images in order, then its mask.
pub async fn for_job(pool: &PgPool, job_id: Uuid) -> Result<Vec<Input>, StoreError> {
    let rows = sqlx::query!(
        r#"SELECT role, position, upload_id, url, from_job, from_index
             FROM genq.inputs WHERE job_id = $1 ORDER BY role = 'mask', position"#,
        job_id
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|row| {
            let source = match (row.upload_id, row.url, row.from_job) {
                (Some(id), _, _) => Source::Upload(id),
                (_, Some(url), _) => Source::Url(url),
                (_, _, Some(job)) => Source::FromJob {
                    job,
                    index: row.from_index.max(0) as u32,
                },
                _ => return Err(StoreError::Invalid("an input row names no source".into())),
            };
            Ok(Input {
                role: row.role.parse().map_err(StoreError::Invalid)?,
                position: row.position,
                source,
            })
        })
        .collect()
}

/// An upload as the API describes it (its bytes are not read back here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Upload {
    pub id: Uuid,
    pub content_type: String,
    pub bytes: i32,
    pub sha256: String,
    pub file_name: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Stores an uploaded image whose bytes were checked.
pub async fn insert_upload(
    pool: &PgPool,
    content_type: &str,
    sha256: &str,
    file_name: Option<&str>,
    data: &[u8],
) -> Result<Upload, StoreError> {
    sqlx::query_as!(
        Upload,
        "INSERT INTO genq.uploads (content_type, bytes, sha256, file_name, data)
         VALUES ($1, octet_length($4::bytea), $2, $3, $4::bytea)
         RETURNING id, content_type, bytes, sha256, file_name, created_at",
        content_type,
        sha256,
        file_name,
        data
    )
    .fetch_one(pool)
    .await
    .map_err(StoreError::classify)
}

/// An upload's bytes.
pub async fn upload_data(pool: &PgPool, id: Uuid) -> Result<Option<Bytes>, StoreError> {
    let data = sqlx::query_scalar!("SELECT data FROM genq.uploads WHERE id = $1", id)
        .fetch_optional(pool)
        .await?;
    Ok(data.map(Bytes::from))
}

/// Which of `ids` are uploads that exist.
pub async fn existing_uploads(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
    Ok(
        sqlx::query_scalar!("SELECT id FROM genq.uploads WHERE id = ANY($1)", ids)
            .fetch_all(pool)
            .await?,
    )
}

/// A job another job's input names: its state, and how many images it has
/// (once succeeded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputJob {
    pub id: Uuid,
    pub state: JobState,
    pub images: Option<i32>,
}

/// The jobs among `ids` that exist.
pub async fn input_jobs(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<InputJob>, StoreError> {
    Ok(sqlx::query_as!(
        InputJob,
        r#"SELECT id, state AS "state: JobState",
                  jsonb_array_length(CASE WHEN jsonb_typeof(result->'images') = 'array'
                                          THEN result->'images' END) AS images
             FROM genq.jobs WHERE id = ANY($1)"#,
        ids
    )
    .fetch_all(pool)
    .await?)
}

/// Deletes up to `batch` uploads older than `age` that no job's input
/// names any more (their jobs were pruned, or none ever named them).
pub async fn prune_uploads(pool: &PgPool, age: Duration, batch: i64) -> Result<u64, StoreError> {
    let done = sqlx::query!(
        "DELETE FROM genq.uploads u
          WHERE u.id IN (SELECT id FROM genq.uploads
                          WHERE created_at < now() - make_interval(secs => $1)
                            AND NOT EXISTS (SELECT 1 FROM genq.inputs i WHERE i.upload_id = uploads.id)
                          ORDER BY created_at LIMIT $2
                            FOR UPDATE SKIP LOCKED)",
        age.as_secs_f64(),
        batch
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

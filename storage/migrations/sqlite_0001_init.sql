-- BehaviorGate records on the embedded SQLite store. Times are integer microseconds since
-- the epoch (UTC); feature vectors are little-endian float32 blobs; JSON is text.
-- Every statement is idempotent (IF NOT EXISTS) so two processes migrating at once agree.

CREATE TABLE IF NOT EXISTS predictions (
    id                  TEXT PRIMARY KEY,
    ts                  INTEGER NOT NULL,
    session_id          TEXT,
    user_id             TEXT,
    method              TEXT NOT NULL DEFAULT '',
    route               TEXT NOT NULL DEFAULT '',
    rule                TEXT,
    client_ip           TEXT,
    features            BLOB NOT NULL,
    iforest_score       REAL,
    autoencoder_score   REAL,
    composite           REAL,
    decision            TEXT NOT NULL,
    is_anomaly          INTEGER NOT NULL DEFAULT 0,
    explanation         TEXT,
    model_version       INTEGER,
    feature_set_version TEXT NOT NULL DEFAULT '',
    processing_ms       REAL,
    upstream_status     INTEGER,
    confidence          REAL,
    agreement           REAL
);
CREATE INDEX IF NOT EXISTS predictions_ts ON predictions (ts);
CREATE INDEX IF NOT EXISTS predictions_user_ts ON predictions (user_id, ts);

CREATE TABLE IF NOT EXISTS feedback (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    prediction_id       TEXT NOT NULL,
    prediction_ts       INTEGER NOT NULL,
    user_id             TEXT NOT NULL,
    is_false_positive   INTEGER NOT NULL,
    notes               TEXT NOT NULL DEFAULT '',
    created_at          INTEGER NOT NULL,
    UNIQUE (prediction_id, user_id)
);
CREATE INDEX IF NOT EXISTS feedback_fp ON feedback (is_false_positive, id);
CREATE INDEX IF NOT EXISTS feedback_created ON feedback (created_at);

CREATE TABLE IF NOT EXISTS incidents (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER,
    status              TEXT NOT NULL,
    prediction_id       TEXT,
    session_id          TEXT,
    user_id             TEXT,
    client_ip           TEXT,
    route               TEXT,
    rule                TEXT,
    composite           REAL,
    reason              TEXT NOT NULL DEFAULT '',
    actor               TEXT,
    notes               TEXT NOT NULL DEFAULT '',
    details             TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS incidents_status ON incidents (status, id);
CREATE INDEX IF NOT EXISTS incidents_created ON incidents (created_at);

CREATE TABLE IF NOT EXISTS model_versions (
    version             INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at          INTEGER NOT NULL,
    feature_set_version TEXT NOT NULL,
    bundle              BLOB NOT NULL,
    config              TEXT NOT NULL DEFAULT '{}',
    metrics             TEXT NOT NULL DEFAULT '{}',
    window_start        INTEGER,
    window_end          INTEGER,
    sample_count        INTEGER NOT NULL DEFAULT 0,
    status              TEXT NOT NULL DEFAULT 'candidate'
                        CHECK (status IN ('candidate', 'active', 'retired')),
    activated_at        INTEGER,
    activated_by        TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS model_versions_one_active
    ON model_versions (status) WHERE status = 'active';

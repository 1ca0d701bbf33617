-- BehaviorGate records on Postgres: predictions (daily partitions), feedback, incidents,
-- model registry. Objects are created unqualified, i.e. in the connection's current schema.

CREATE TABLE predictions (
    id                  text COLLATE "C" NOT NULL,
    ts                  timestamptz NOT NULL,
    session_id          text,
    user_id             text,
    method              text NOT NULL DEFAULT '',
    route               text NOT NULL DEFAULT '',
    rule                text,
    client_ip           text,
    features            bytea NOT NULL,
    iforest_score       double precision,
    autoencoder_score   double precision,
    composite           double precision,
    decision            text NOT NULL,
    is_anomaly          boolean NOT NULL DEFAULT false,
    explanation         jsonb,
    model_version       integer,
    feature_set_version text NOT NULL DEFAULT '',
    processing_ms       double precision,
    upstream_status     integer,
    confidence          double precision,
    agreement           double precision,
    PRIMARY KEY (id, ts)
) PARTITION BY RANGE (ts);

-- Catches rows whose day has no partition yet (clock skew, long outages); rows are moved
-- out when that day's partition is created, and deleted in batches by retention.
CREATE TABLE predictions_default PARTITION OF predictions DEFAULT;

CREATE INDEX predictions_user_ts ON predictions (user_id, ts);
CREATE INDEX predictions_ts_brin ON predictions USING brin (ts);

CREATE TABLE feedback (
    id                  bigserial PRIMARY KEY,
    prediction_id       text COLLATE "C" NOT NULL,
    prediction_ts       timestamptz NOT NULL,
    user_id             text NOT NULL,
    is_false_positive   boolean NOT NULL,
    notes               text NOT NULL DEFAULT '',
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (prediction_id, user_id)
);
CREATE INDEX feedback_fp ON feedback (id) WHERE is_false_positive;
CREATE INDEX feedback_created ON feedback (created_at);

CREATE TABLE incidents (
    id                  bigserial PRIMARY KEY,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz,
    status              text NOT NULL,
    prediction_id       text,
    session_id          text,
    user_id             text,
    client_ip           text,
    route               text,
    rule                text,
    composite           double precision,
    reason              text NOT NULL DEFAULT '',
    actor               text,
    notes               text NOT NULL DEFAULT '',
    details             jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX incidents_status ON incidents (status, id);
CREATE INDEX incidents_created ON incidents (created_at);

CREATE TABLE model_versions (
    version             serial PRIMARY KEY,
    created_at          timestamptz NOT NULL DEFAULT now(),
    feature_set_version text NOT NULL,
    bundle              bytea NOT NULL,
    config              jsonb NOT NULL DEFAULT '{}',
    metrics             jsonb NOT NULL DEFAULT '{}',
    window_start        timestamptz,
    window_end          timestamptz,
    sample_count        integer NOT NULL DEFAULT 0,
    status              text NOT NULL DEFAULT 'candidate'
                        CHECK (status IN ('candidate', 'active', 'retired')),
    activated_at        timestamptz,
    activated_by        text
);
-- At most one active version, enforced by the database itself.
CREATE UNIQUE INDEX model_versions_one_active ON model_versions (status) WHERE status = 'active';

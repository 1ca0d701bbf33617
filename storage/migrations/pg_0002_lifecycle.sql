-- Model lifecycle: every drift check, and the last slot each scheduled job ran for
-- (so that of several replicas only one runs a given hour's or day's job).

CREATE TABLE drift_checks (
    id                  bigserial PRIMARY KEY,
    checked_at          timestamptz NOT NULL,
    model_version       integer,
    drift_score         double precision NOT NULL,
    is_drifting         boolean NOT NULL,
    sample_size         integer NOT NULL,
    report              jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX drift_checks_checked ON drift_checks (checked_at);

CREATE TABLE job_runs (
    job                 text PRIMARY KEY,
    slot                timestamptz NOT NULL,
    ran_at              timestamptz NOT NULL,
    status              text NOT NULL,
    details             jsonb NOT NULL DEFAULT '{}'
);

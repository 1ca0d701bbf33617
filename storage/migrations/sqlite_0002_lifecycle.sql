-- Model lifecycle: every drift check, and the last slot each scheduled job ran for.
-- Times are microseconds since the epoch (UTC), as in 0001.

CREATE TABLE IF NOT EXISTS drift_checks (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    checked_at          INTEGER NOT NULL,
    model_version       INTEGER,
    drift_score         REAL NOT NULL,
    is_drifting         INTEGER NOT NULL,
    sample_size         INTEGER NOT NULL,
    report              TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS drift_checks_checked ON drift_checks (checked_at);

CREATE TABLE IF NOT EXISTS job_runs (
    job                 TEXT PRIMARY KEY,
    slot                INTEGER NOT NULL,
    ran_at              INTEGER NOT NULL,
    status              TEXT NOT NULL,
    details             TEXT NOT NULL DEFAULT '{}'
);

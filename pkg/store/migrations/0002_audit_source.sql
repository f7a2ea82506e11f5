-- An audit row taken from something berth may see more than once (an Event
-- berth-manager reported, seen again after a restart or a relist) names its
-- source: one row per org and source, so a replay appends nothing.
ALTER TABLE audit_logs ADD COLUMN source text;
CREATE UNIQUE INDEX audit_logs_source ON audit_logs (org, source) WHERE source IS NOT NULL;

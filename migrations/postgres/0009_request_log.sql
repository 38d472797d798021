-- When rate-limited requests were made (the events-stream: at most 10 a minute), so the limit
-- holds across processes and restarts. Rows older than a day are deleted as new ones come.
CREATE TABLE request_log (
    name TEXT NOT NULL,
    at   BIGINT NOT NULL   -- unix milliseconds
);
CREATE INDEX request_log_name_at ON request_log (name, at);

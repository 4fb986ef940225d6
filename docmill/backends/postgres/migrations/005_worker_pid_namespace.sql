-- 005: a worker records the PID namespace it runs in, so a worker on the same host and in the same
-- namespace can tell that another one's process is gone and take its claims back at once.
ALTER TABLE workers ADD COLUMN IF NOT EXISTS pid_ns text;

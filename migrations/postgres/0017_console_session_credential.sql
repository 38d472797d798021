-- For a session signed in by password: the hex SHA-256 of the operator's password hash it signed
-- in with. A password changed in config (a new hash) ends every session signed in with the old
-- one. Sessions from before this column have none and sign in again.
ALTER TABLE console_sessions ADD COLUMN credential TEXT;

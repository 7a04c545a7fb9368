-- GET /v1/audit filters by actor, action or request id and pages by id: each filter walks an
-- index in id order instead of the whole log.
CREATE INDEX audit_log_actor ON audit_log ((actor->>'id'), id);
CREATE INDEX audit_log_action ON audit_log (action, id);
CREATE INDEX audit_log_request ON audit_log (request_id) WHERE request_id IS NOT NULL;

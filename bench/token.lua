-- wrk script: POST /oauth/token with the client credentials grant (RFC 6749 §4.4). The client
-- authenticates by HTTP Basic: pass `-H "Authorization: Basic base64(client_id:client_secret)"`.

wrk.method = "POST"
wrk.path = "/oauth/token"
wrk.body = "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"

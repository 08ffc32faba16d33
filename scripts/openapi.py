#!/usr/bin/env python3
"""Writes docs/openapi.json, the description of the server's /api/v1.

Edit this file, run `python3 scripts/openapi.py`, commit both. The test suite checks the
document against the server's route table (crates/claude-vm-server, API_ROUTES).
"""
import json
import pathlib

def ref(name):
    return {"$ref": f"#/components/schemas/{name}"}

def arr(s):
    return {"type": "array", "items": s}

S = {"type": "string"}
NS = {"type": ["string", "null"]}
I = {"type": "integer"}
B = {"type": "boolean"}

def obj(props, required=None, extra=False, desc=None):
    o = {"type": "object", "properties": props}
    o["required"] = required if required is not None else list(props)
    if not extra:
        o["additionalProperties"] = False
    if desc:
        o["description"] = desc
    return o

schemas = {
    "Error": obj({"error": S, "hint": S}, ["error"], desc="Every non-2xx answer."),
    "Status": {"type": "string", "enum": ["creating", "running", "stopped", "error", "unknown"]},
    "Source": obj({"kind": {"type": "string", "enum": ["path", "git"]}, "location": S}),
    "Workspace": obj({
        "id": S, "name": S, "status": ref("Status"), "status_reason": NS, "provider": S,
        "source": ref("Source"), "project": S, "project_dir": S, "image": S, "branch": NS,
        "created_at": S, "updated_at": S,
        "last_activity": {"type": ["string", "null"], "description": "RFC 3339; running workspaces only"},
        "last_backup": {"type": ["string", "null"], "description": "RFC 3339: when its last backup was taken"},
        "backup_error": {"type": ["string", "null"], "description": "why the last backup attempt failed"},
        "idle_since": {"type": ["string", "null"], "description": "RFC 3339: a workspace that stopped itself for idleness had been idle since then"},
        "ports": {**arr(S), "description": "the ports its devcontainer.json forwards (`3000`, `db:5432`, `3000 (web)`); absent when none"},
        "machine": {**obj({"id": S, "state": {"type": "string", "description": "Running, Busy, Stopped, NotFound or unknown"}}, ["id", "state"]), "description": "the machine it runs on, for a provider that creates machines (devpod); absent elsewhere"},
    }, ["id", "name", "status", "status_reason", "provider", "source", "project", "project_dir", "image", "branch", "created_at", "updated_at", "last_activity", "last_backup", "backup_error", "idle_since"]),
    "WorkspaceList": obj({
        "workspaces": arr(ref("Workspace")),
        "unreachable": arr(obj({"provider": S, "reason": S})),
    }),
    "UpOutcome": obj({
        "action": {"type": "string", "enum": ["created", "resumed", "already_running"]},
        "workspace": ref("Workspace"),
    }),
    "CreateWorkspace": obj({
        "target": {"type": "string", "description": "A remote git URL (https://, http://, ssh://, git+ssh://, git://, user@host:path; cloned inside the workspace), or an existing workspace (id, name or unique id prefix; resumed). Never a path on the server: folders are uploaded as a tar stream."},
        "provider": S, "image": S, "branch": S, "name": S,
        "idle_stop": {"type": "string", "description": "a new workspace's own idle stop: off or a duration (10m, 2h); default: the server's lifecycle.idle_stop"},
    }, ["target"]),
    "SetIdleStop": obj({"idle_stop": {"type": ["string", "null"], "description": "off, a duration (10m, 2h), or null for the server's lifecycle.idle_stop"}}),
    "IdleStopPolicy": obj({"workspace": S, "idle_stop": {"type": "string", "description": "off or a duration"},
        "from_config": {"type": "boolean", "description": "the workspace has no setting of its own"},
        "applied": {"type": "boolean", "description": "the running workspace's daemon has it (a stopped one gets it when it starts)"}}),
    "BackupTaken": obj({"snapshot": {"type": "string", "description": "the snapshot's id in the restic-format repository"},
        "time": S, "bytes_added": I, "files_new": I, "files_changed": I, "files_unmodified": I,
        "unchanged": {"type": "boolean", "description": "nothing changed since the previous snapshot, which stands for this backup (no new one was written)"}}),
    "Snapshot": obj({
        "id": {"type": "string", "description": "full id; `restic` shows the first 8 characters"}, "short_id": S, "time": S,
        "workspace_id": NS, "workspace_name": NS, "provider": NS,
        "source": {"type": ["string", "null"], "description": "where the workspace came from (folder or git URL)"},
        "version": {"type": ["string", "null"], "description": "claude-vm version that took it"}, "image": NS,
        "tags": arr(S), "bytes_added": I, "files_changed": I, "files_new": I, "files_unmodified": I,
        "total_bytes": I, "total_files": I}),
    "BackupList": obj({"snapshots": arr(ref("Snapshot"))}, desc="Oldest first."),
    "Forget": obj({"workspace": S,
        "keep_last": {"type": ["integer", "null"], "minimum": 0, "maximum": 4294967295},
        "keep_daily": {"type": ["integer", "null"], "minimum": 0, "maximum": 4294967295}}, ["workspace"],
        desc="Both keep_ fields absent: the server's retention (backup.keep_last, backup.keep_daily)."),
    "Forgotten": obj({"removed": arr(S)}),
    "Purge": obj({"workspace": {"type": "string", "description": "a deleted workspace: its old name or id"}}),
    "Purged": obj({"workspace_id": S, "purged": {"type": "integer", "minimum": 0, "description": "snapshots removed"}}),
    "Restore": obj({"workspace": {"type": "string", "description": "an existing workspace, or a deleted one by its old name or id"},
        "snapshot": {"type": ["string", "null"], "description": "snapshot id or unique prefix; default the newest"},
        "name": NS, "provider": NS, "image": NS}, ["workspace"]),
    "Down": obj({"force": B, "timeout": {"type": "integer", "minimum": 0, "description": "seconds to wait for a graceful stop, default 10, at most 600 (larger waits 600); 12.0 is read as 12"}}, []),
    "Provider": obj({
        "name": S, "type": S, "default": B,
        "options": {"type": "object", "additionalProperties": S, "description": "secrets masked"},
        "workspaces": I, "created_at": S,
    }),
    "Agents": obj({"agents": arr(S), "default": S}),
    "WhoAmI": obj({"kind": {"type": "string", "enum": ["token", "session"]}, "token_id": S, "token_name": S, "version": S}, ["kind", "version"]),
    "ConversationStatus": {"type": "string", "enum": ["starting", "working", "idle", "waiting_for_approval", "failed", "stopped"]},
    "Chat": obj({
        "id": S, "workspace": S, "workspace_id": S, "agent": S, "title": NS,
        "status": {"type": "string", "description": "a ConversationStatus, or the last known one"},
        "status_reason": NS, "queued": I,
        "live": {"type": "boolean", "description": "asked of the running workspace (or remembered)"},
        "created_at": S, "updated_at": S,
        "agent_version": {"type": "string", "description": "the agent program's version, when known"},
    }, ["id", "workspace", "workspace_id", "agent", "title", "status", "status_reason", "queued", "live", "created_at", "updated_at"]),
    "Conversation": obj({
        "id": S, "agent": S, "title": NS, "status": ref("ConversationStatus"), "status_reason": NS,
        "permission_mode": {"type": "string", "enum": ["skip", "ask"]},
        "session_id": NS, "queued": I, "last_seq": I, "created_at": S, "updated_at": S,
        "agent_version": {"type": "string", "description": "the agent program's version, when known"},
    }, ["id", "agent", "title", "status", "status_reason", "permission_mode", "session_id", "queued", "last_seq", "created_at", "updated_at"]),
    "ConversationDetail": {"allOf": [ref("Conversation"), obj({"workspace": S, "workspace_id": S}, extra=True)]},
    "CreateConversation": obj({
        "agent": {"type": "string", "description": "claude, codex, gemini, goose, qwen, acp; default from config"},
        "message": {"type": "string", "description": "first message"},
        "ask": {"type": "boolean", "description": "put every tool use to the user"},
    }, []),
    "Send": obj({"text": {"type": "string", "minLength": 1, "pattern": "\\S", "description": "the message; not only white space"}}),
    "Sent": obj({"message_id": S, "seq": I, "held": {"type": "boolean", "description": "the workspace was not running: the server keeps the message, starts the workspace and delivers it (seq is 0 until then)"}}, ["message_id", "seq"]),
    "Decision": obj({"allow": B, "message": {"type": ["string", "null"], "description": "told to the agent when denying"}}, ["allow"]),
    "Event": {
        "type": "object",
        "description": "One transcript event. `type` is user, delivered, assistant, tool_call, tool_result, approval_request, approval_decision, turn_end or status; the other fields depend on it (docs/protocol.md).",
        "required": ["seq", "ts", "type"],
        "properties": {"seq": I, "ts": S, "type": {"type": "string", "enum": [
            "user", "delivered", "assistant", "tool_call", "tool_result", "approval_request",
            "approval_decision", "turn_end", "status"]}},
    },
    "FileInfo": obj({
        "path": S, "name": S, "kind": {"type": "string", "enum": ["file", "dir", "symlink", "other"]},
        "size": I, "mode": I, "mtime": I, "link_target": NS,
    }),
    "Listing": obj({"file": ref("FileInfo"), "entries": arr(ref("FileInfo"))}, ["file"]),
    "FileChange": obj({
        "path": S, "old_path": NS,
        "change": {"type": "string", "enum": ["added", "modified", "deleted", "renamed", "untracked", "type_changed"]},
        "additions": {"type": ["integer", "null"]}, "deletions": {"type": ["integer", "null"]}, "binary": B,
    }),
    "Diff": obj({"project_dir": S, "branch": NS, "head": NS, "files": arr(ref("FileChange")), "patch": S}),
    "Exec": obj({
        "command": {"type": "array", "items": S, "description": "program and arguments"},
        "shell": {"type": "string", "description": "or a command line for sh -c"},
        "workdir": S, "env": {"type": "array", "items": S, "description": "NAME=VALUE"},
        "user": S, "stdin": S, "stdin_base64": S,
    }, []),
    "ExecLine": {
        "type": "object",
        "description": "One line of the NDJSON answer: started {pid}, stdout/stderr {data}, then exit {code} or error {message}; keepalive (no other field) every 15 s while the command is silent.",
        "required": ["type"],
        "properties": {"type": {"type": "string", "enum": ["started", "stdout", "stderr", "exit", "error", "keepalive"]},
                       "pid": I, "data": S, "code": I, "message": S},
    },
}

def resp(desc, schema=None, ctype="application/json"):
    r = {"description": desc}
    if schema is not None:
        r["content"] = {ctype: {"schema": schema}}
    return r

ERR = {code: resp(text, ref("Error")) for code, text in [
    ("400", "Invalid request (a field, a query parameter or the body)"), ("401", "No or invalid credentials"),
    ("403", "Cookie-authenticated change without the CSRF token, or cross-site"),
    ("404", "No such workspace or conversation"), ("409", "Not possible in the current state (e.g. not running)"),
    ("413", "The request body is too large (JSON: 1 MiB, tar uploads: 4 GiB)"),
    ("415", "The body is not of a type this route takes (send Content-Type: application/json)"),
    ("421", "The Host header names another server (see `claude-vm server --public-url`)"),
    ("422", "Understood but cannot be done as configured: a bad image, an agent that is not installed, a clone that failed; the hint says what to fix"),
    ("429", "Too many failed logins or wrong tokens from this address"),
    ("502", "The provider or the workspace could not be reached"),
    ("503", "The server is shutting down"),
    ("504", "The provider did not answer in time"),
    ("507", "The backup repository's disk is full")]}

# Every route that reaches the engine can meet any of these.
ENGINE = ("400", "401", "403", "404", "409", "421", "422", "429", "502", "503", "504")
# Routes that only read the server's own state.
LOCAL = ("401", "421", "429")
# Routes that take a JSON body.
JSON_BODY = ("413", "415")

def op(summary, ok, params=(), body=None, errors=ENGINE, desc=None, op_id=None):
    o = {"summary": summary, "operationId": op_id, "parameters": list(params), "responses": dict(ok)}
    if desc:
        o["description"] = desc
    if body is not None:
        o["requestBody"] = body
    for e in sorted(errors):
        o["responses"][e] = ERR[e]
    return o

SEQ = {"type": "integer", "minimum": 0, "maximum": 9007199254740991}

def path_param(name, desc):
    return {"name": name, "in": "path", "required": True, "schema": S, "description": desc}

def query(name, schema, desc):
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": desc}

WS = path_param("workspace", "workspace id, name or unique id prefix")
CONV = path_param("conversation", "conversation id or unique prefix")
def json_body(schema, required=True):
    return {"required": required, "content": {"application/json": {"schema": schema}}}

paths = {
    "/api/openapi.json": {"get": op("This document", {"200": resp("OpenAPI 3.1", {"type": "object"})}, errors=LOCAL, op_id="openapi")},
    "/api/v1/whoami": {"get": op("Who the credentials belong to", {"200": resp("The caller", ref("WhoAmI"))}, errors=LOCAL, op_id="whoami")},
    "/api/v1/agents": {"get": op("Agents that can be started", {"200": resp("Enabled agents", ref("Agents"))}, errors=LOCAL, op_id="listAgents")},
    "/api/v1/providers": {"get": op("Providers (secrets masked)", {"200": resp("Providers", arr(ref("Provider")))}, errors=LOCAL, op_id="listProviders")},
    "/api/v1/workspaces": {
        "get": op("Workspaces with live status", {"200": resp("Workspaces", ref("WorkspaceList"))}, errors=tuple(e for e in ENGINE if e not in ("400", "403", "404", "409")), op_id="listWorkspaces"),
        "post": op("Create a workspace (or resume one)",
                   {"201": resp("Created", ref("UpOutcome")), "200": resp("Resumed or already running", ref("UpOutcome"))},
                   params=[query("project", S, "tar uploads: the project folder's name"),
                           query("source", S, "tar uploads: the folder's path on the client, recorded as the workspace's source"),
                           query("name", S, "tar uploads: workspace name"), query("provider", S, "tar uploads"),
                           query("image", S, "tar uploads"), query("branch", S, "tar uploads"),
                           query("idle_stop", S, "tar uploads: off or a duration")],
                   body={"required": True, "content": {
                       "application/json": {"schema": ref("CreateWorkspace")},
                       "application/x-tar": {"schema": {"type": "string", "format": "binary"},
                                              "description": "a project folder; the query carries the options"}}},
                   errors=ENGINE + JSON_BODY, op_id="createWorkspace",
                   desc="From a git URL (JSON) or an uploaded folder (a tar stream, at most 4 GiB). Runs to its end even if the client disconnects."),
    },
    "/api/v1/workspaces/{workspace}": {
        "parameters": [WS],
        "get": op("One workspace", {"200": resp("The workspace", ref("Workspace"))}, op_id="getWorkspace"),
        "delete": op("Delete a workspace: container, volume and every file in it", {"200": resp("The deleted workspace", ref("Workspace"))},
                     params=[query("purge", B, "also remove every snapshot of it and the data only they use (no final backup is taken)"),
                             query("force", B, "delete even when its final backup fails")],
                     op_id="deleteWorkspace",
                     desc="A final backup is taken first and kept, unless `purge`; without one that succeeds nothing is deleted (409) unless `force`."),
    },
    "/api/v1/workspaces/{workspace}/up": {"parameters": [WS], "post": op("Resume a stopped workspace", {"200": resp("Outcome", ref("UpOutcome"))}, op_id="upWorkspace")},
    "/api/v1/workspaces/{workspace}/backup": {"parameters": [WS], "post": op("Back the workspace up now (it must be running)", {"200": resp("The snapshot taken", ref("BackupTaken"))}, errors=ENGINE + ("507",), op_id="backupWorkspace")},
    "/api/v1/backups": {"get": op("Snapshots in the server's backup repository", {"200": resp("Snapshots", ref("BackupList"))},
        params=[query("workspace", S, "only this workspace's (existing, or deleted: its old name or id)")], errors=ENGINE + ("507",), op_id="listBackups")},
    "/api/v1/backups/forget": {"post": op("Remove a workspace's older snapshots and the data only they use", {"200": resp("What was removed", ref("Forgotten"))},
        body=json_body(ref("Forget")), errors=ENGINE + JSON_BODY + ("507",), op_id="forgetBackups")},
    "/api/v1/backups/purge": {"post": op("Remove every snapshot of a deleted workspace and the data only they use", {"200": resp("What was removed", ref("Purged"))},
        body=json_body(ref("Purge")), errors=ENGINE + JSON_BODY + ("507",), op_id="purgeBackups",
        desc="A workspace that still exists is refused (400): delete it with `purge`.")},
    "/api/v1/backups/export": {"get": op("A snapshot as one portable archive (what `claude-vm workspace export` writes)",
        {"200": resp("The archive, with its length", {"type": "string", "format": "binary"}, "application/x-tar")},
        params=[dict(query("workspace", {"type": "string", "minLength": 1}, "an existing workspace, or a deleted one by its old name or id"), required=True),
                query("snapshot", S, "snapshot id or unique prefix; default the newest")],
        errors=ENGINE + ("507",), op_id="exportBackup",
        desc="The archive is made whole before the answer starts, so an error is an error answer, never a short archive.")},
    "/api/v1/backups/import": {"post": op("A new workspace from an export archive", {"201": resp("Created", ref("UpOutcome"))},
        params=[query("name", S, "name of the new workspace; default the exported one's, when free"),
                query("provider", S, "where to create it"), query("image", S, "default the exported one's")],
        body={"required": True, "content": {
              "application/x-tar": {"schema": {"type": "string", "format": "binary"},
                                    "description": "an archive `claude-vm workspace export` (or `GET /api/v1/backups/export`) wrote"},
              "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                           "description": "the same archive, sent as plain bytes"}}},
        errors=ENGINE + JSON_BODY + ("507",), op_id="importBackup",
        desc="Runs to its end even if the client disconnects; a failed import removes what it made.")},
    "/api/v1/backups/restore": {"post": op("A new workspace from a snapshot", {"201": resp("Created", ref("UpOutcome"))},
        body=json_body(ref("Restore")), errors=ENGINE + JSON_BODY + ("507",), op_id="restoreBackup",
        desc="A restore that fails half-way removes what it made.")},
    "/api/v1/workspaces/{workspace}/idle-stop": {"parameters": [WS], "post": op("Set when a workspace stops itself for idleness", {"200": resp("The policy now in force", ref("IdleStopPolicy"))}, body=json_body(ref("SetIdleStop")), errors=ENGINE + JSON_BODY, op_id="setIdleStop")},
    "/api/v1/workspaces/{workspace}/down": {"parameters": [WS], "post": op("Stop a workspace (files kept)", {"200": resp("The workspace", ref("Workspace"))}, body=json_body(ref("Down"), False), errors=ENGINE + ("413",), op_id="downWorkspace")},
    "/api/v1/workspaces/{workspace}/diff": {"parameters": [WS], "get": op("What changed in the project (untracked files included)", {"200": resp("The diff", ref("Diff"))}, params=[query("stat", B, "files and line counts only")], op_id="getDiff")},
    "/api/v1/workspaces/{workspace}/files": {"parameters": [WS], "get": op("A file's metadata, or a directory's entries", {"200": resp("Listing", ref("Listing"))}, params=[query("path", S, "relative to the project folder, or absolute under /workspace; default the project folder")], op_id="listFiles")},
    "/api/v1/workspaces/{workspace}/files/content": {"parameters": [WS], "get": op("A file's content", {"200": resp("The bytes", {"type": "string", "format": "binary"}, "application/octet-stream")}, params=[dict(query("path", {"type": "string", "minLength": 1}, "the file (not a directory)"), required=True)], op_id="readFile")},
    "/api/v1/workspaces/{workspace}/exec": {"parameters": [WS], "post": op("Run a command; output streamed as JSON lines",
        {"200": resp("NDJSON lines", ref("ExecLine"), "application/x-ndjson")},
        params=[query("encoding", {"type": "string", "enum": ["text", "base64"]}, "how output bytes are encoded")],
        body=json_body(ref("Exec")), errors=ENGINE + JSON_BODY, op_id="exec", desc="The command is killed when the client disconnects.")},
    "/api/v1/workspaces/{workspace}/conversations": {
        "parameters": [WS],
        "get": op("The workspace's conversations", {"200": resp("Conversations", arr(ref("Chat")))}, op_id="listWorkspaceConversations"),
        "post": op("Start a conversation with an agent", {"201": resp("The conversation", ref("Chat"))}, body=json_body(ref("CreateConversation"), False), errors=ENGINE + ("413",), op_id="createConversation"),
    },
    "/api/v1/conversations": {"get": op("All conversations", {"200": resp("Conversations", arr(ref("Chat")))}, params=[query("workspace", S, "only this workspace's")], op_id="listConversations")},
    "/api/v1/conversations/{conversation}": {"parameters": [CONV], "get": op("A conversation, live", {"200": resp("The conversation", ref("ConversationDetail"))}, op_id="getConversation")},
    "/api/v1/conversations/{conversation}/messages": {"parameters": [CONV], "post": op("Send a message (queued while the agent works)", {"202": resp("Stored before this answer", ref("Sent"))}, body=json_body(ref("Send")), errors=ENGINE + JSON_BODY, op_id="sendMessage")},
    "/api/v1/conversations/{conversation}/interrupt": {"parameters": [CONV], "post": op("Interrupt the running turn", {"200": resp("Whether a turn was running", obj({"interrupted": B}))}, op_id="interrupt")},
    "/api/v1/conversations/{conversation}/stop": {"parameters": [CONV], "post": op("Stop the agent (a new message starts it again)", {"200": resp("The conversation", ref("Conversation"))}, op_id="stopConversation")},
    "/api/v1/conversations/{conversation}/approvals/{approval}": {"parameters": [CONV, path_param("approval", "approval id from an approval_request event")],
        "post": op("Allow or deny a pending tool use", {"200": resp("The conversation", ref("Conversation"))}, body=json_body(ref("Decision")), errors=ENGINE + JSON_BODY, op_id="decide")},
    "/api/v1/conversations/{conversation}/transcript": {"parameters": [CONV], "get": op("Transcript events", {"200": resp("Events", arr(ref("Event")))}, params=[query("after", SEQ, "only events with a larger seq")], op_id="getTranscript")},
    "/api/v1/conversations/{conversation}/events": {"parameters": [CONV], "get": op("Live transcript (server-sent events)",
        {"200": resp("`id` is the event's seq, `data` the Event as JSON", {"type": "string"}, "text/event-stream")},
        params=[query("after", SEQ, "start after this seq"),
                {"name": "Last-Event-ID", "in": "header", "required": False, "schema": S, "description": "resume after this seq (wins over `after`)"}],
        op_id="streamEvents", desc="Reconnect with Last-Event-ID to resume without losing or repeating events.")},
}

doc = {
    "openapi": "3.1.0",
    "info": {"title": "claude-vm server API", "version": "1",
             "description": "The API of `claude-vm server`. Every route needs credentials: `Authorization: Bearer <token>` (`claude-vm token create`), or a browser session cookie, in which case state-changing requests also need the `X-CSRF-Token` header."},
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}, {"session": []}],
    "paths": paths,
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "session": {"type": "apiKey", "in": "cookie", "name": "cvm_session"},
        },
        "schemas": schemas,
    },
}

out = pathlib.Path(__file__).resolve().parent.parent / "docs" / "openapi.json"
out.write_text(json.dumps(doc, indent=2) + "\n")
print(f"wrote {out}")

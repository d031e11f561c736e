//! Counting one client's requests from the API server's audit log.
//!
//! kube-apiserver's `/metrics` counts requests by verb and resource but not by client, and on the real
//! control plane kube-controller-manager, the scheduler and kwok list and watch pods too. The audit
//! policy written by [`policy`] logs (at `Metadata` level) only the requests of the agent's
//! ServiceAccount ([`crate::rbac::agent_username`]) and of clients in [`crate::pki::MEASURED_GROUP`]
//! (peers measured by the benchmarks), so counts are exact per user and cost nothing for everyone else.

use std::collections::HashSet;
use std::path::Path;

use serde_json::Value;

/// The audit policy: `Metadata` for measured clients, nothing for the rest.
pub fn policy() -> String {
    format!(
        "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  userGroups: [\"{}\"]
- level: Metadata
  users: [\"{}\"]
- level: None
",
        crate::pki::MEASURED_GROUP,
        crate::rbac::agent_username()
    )
}

/// One request of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The user name.
    pub user: String,
    /// The verb (`list`, `watch`, `get`, `create`, `patch`, ...).
    pub verb: String,
    /// `group/resource` for a named group, `resource` for the core group.
    pub resource: String,
    /// The subresource (`status`, `scale`, ...), empty for none.
    pub subresource: String,
    /// The object's namespace, empty for none.
    pub namespace: String,
    /// The object's name, empty for collections.
    pub name: String,
    /// The response status code (0 when the log has none yet).
    pub code: u16,
}

impl Request {
    /// Whether the API server answered with a 2xx status.
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

/// Reads every distinct request of the audit log at `path` (a request logged at several stages counts
/// once). A missing file is an empty log.
pub fn read(path: &Path) -> Vec<Request> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    parse(&text)
}

/// Parses audit-log JSON lines (see [`read`]).
pub fn parse(text: &str) -> Vec<Request> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let s = |p: &str| {
            v.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        if !seen.insert(s("/auditID")) {
            continue;
        }
        let group = s("/objectRef/apiGroup");
        let resource = s("/objectRef/resource");
        out.push(Request {
            user: s("/user/username"),
            verb: s("/verb"),
            resource: if group.is_empty() {
                resource
            } else {
                format!("{group}/{resource}")
            },
            subresource: s("/objectRef/subresource"),
            namespace: s("/objectRef/namespace"),
            name: s("/objectRef/name"),
            code: v
                .pointer("/responseStatus/code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(0),
        });
    }
    out
}

/// How many watches of `user` in the audit-log text `text` have started (`ResponseStarted`) and not
/// ended (no `ResponseComplete` or `Panic` stage yet): the user's open watches, when `text` begins
/// after the last restart of the API server (watches cut by a crash never complete).
pub fn open_watches(text: &str, user: &str) -> u64 {
    let mut open = HashSet::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let s = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or_default();
        if s("/verb") != "watch" || s("/user/username") != user {
            continue;
        }
        let id = s("/auditID").to_string();
        match s("/stage") {
            "ResponseStarted" => {
                open.insert(id);
            }
            "ResponseComplete" | "Panic" => {
                open.remove(&id);
            }
            _ => {}
        }
    }
    open.len() as u64
}

/// How many requests `user` made with `verb` on `resource` (`pods`, `apps/deployments`; subresource
/// requests are not counted).
pub fn count(requests: &[Request], user: &str, verb: &str, resource: &str) -> u64 {
    requests
        .iter()
        .filter(|r| {
            r.user == user
                && r.verb.eq_ignore_ascii_case(verb)
                && r.resource == resource
                && r.subresource.is_empty()
        })
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_request_once_and_by_user() {
        let log = r#"{"auditID":"a","stage":"ResponseStarted","verb":"watch","user":{"username":"lazyscale-agent"},"objectRef":{"resource":"pods","apiVersion":"v1"}}
{"auditID":"a","stage":"ResponseComplete","verb":"watch","user":{"username":"lazyscale-agent"},"objectRef":{"resource":"pods","apiVersion":"v1"}}
{"auditID":"b","stage":"ResponseComplete","verb":"list","user":{"username":"lazyscale-agent"},"objectRef":{"resource":"pods","apiVersion":"v1"}}
{"auditID":"c","stage":"ResponseComplete","verb":"list","user":{"username":"peer"},"objectRef":{"resource":"pods","apiVersion":"v1"}}
{"auditID":"d","stage":"ResponseComplete","verb":"patch","user":{"username":"lazyscale-agent"},"objectRef":{"resource":"deployments","apiGroup":"apps","subresource":"scale","namespace":"ns","name":"web"},"responseStatus":{"code":200}}
not json
"#;
        let r = parse(log);
        assert_eq!(r.len(), 4);
        assert_eq!(open_watches(log, "lazyscale-agent"), 0);
        let first = log.lines().next().unwrap_or_default();
        assert_eq!(open_watches(first, "lazyscale-agent"), 1);
        assert_eq!(open_watches(first, "peer"), 0);
        assert_eq!(count(&r, "lazyscale-agent", "WATCH", "pods"), 1);
        assert_eq!(count(&r, "lazyscale-agent", "LIST", "pods"), 1);
        assert_eq!(count(&r, "peer", "list", "pods"), 1);
        assert_eq!(count(&r, "lazyscale-agent", "patch", "apps/deployments"), 0);
        let scale = &r[3];
        assert_eq!((scale.namespace.as_str(), scale.name.as_str()), ("ns", "web"));
        assert!(scale.succeeded() && !r[0].succeeded());
    }
}

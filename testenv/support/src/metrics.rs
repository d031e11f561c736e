//! Reading request counts from the API server's own `/metrics` (Prometheus text format).

/// Sums `apiserver_request_total` samples for `verb` and `resource` (`pods` = core group,
/// `apps/deployments` = another group; subresource requests are not counted), plus, for `WATCH`, the
/// watches still open (`apiserver_longrunning_requests`): a watch is counted in `apiserver_request_total`
/// only when it ends.
pub fn request_count(text: &str, verb: &str, resource: &str) -> u64 {
    let (group, resource) = resource.split_once('/').unwrap_or(("", resource));
    let mut total = 0.0;
    for line in text.lines() {
        let metric = line.starts_with("apiserver_request_total{")
            || (verb == "WATCH" && line.starts_with("apiserver_longrunning_requests{"));
        if !metric {
            continue;
        }
        let Some((labels, value)) = line.rsplit_once("} ") else {
            continue;
        };
        let want = [
            ("verb", verb),
            ("group", group),
            ("resource", resource),
            ("subresource", ""),
        ];
        if want.iter().all(|(k, v)| label(labels, k) == Some(*v)) {
            total += value.trim().parse::<f64>().unwrap_or(0.0);
        }
    }
    total as u64
}

fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("{key}=\"");
    let mut rest = labels;
    while let Some(i) = rest.find(&pat) {
        // the key must start the label set or follow a separator
        let ok = i == 0 || matches!(rest.as_bytes()[i - 1], b'{' | b',');
        let after = &rest[i + pat.len()..];
        if ok {
            return after.find('"').map(|end| &after[..end]);
        }
        rest = after;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"# HELP apiserver_request_total x
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="cluster",subresource="",verb="LIST",version="v1"} 3
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="LIST",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="metrics.k8s.io",resource="pods",scope="namespace",subresource="",verb="LIST",version="v1beta1"} 7
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="status",verb="PATCH",version="v1"} 4
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="cluster",subresource="",verb="WATCH",version="v1"} 1
apiserver_longrunning_requests{component="apiserver",group="",resource="pods",scope="cluster",subresource="",verb="WATCH",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="apps",resource="deployments",scope="resource",subresource="",verb="GET",version="v1"} 5
"#;

    #[test]
    fn counts_by_group_verb_and_resource() {
        assert_eq!(request_count(SAMPLE, "LIST", "pods"), 5);
        assert_eq!(request_count(SAMPLE, "LIST", "metrics.k8s.io/pods"), 7);
        assert_eq!(
            request_count(SAMPLE, "PATCH", "pods"),
            0,
            "subresources are not counted"
        );
        assert_eq!(
            request_count(SAMPLE, "WATCH", "pods"),
            3,
            "finished plus open watches"
        );
        assert_eq!(request_count(SAMPLE, "GET", "apps/deployments"), 5);
        assert_eq!(request_count(SAMPLE, "GET", "deployments"), 0);
    }
}

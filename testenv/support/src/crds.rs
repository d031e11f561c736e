//! Installing lazyscale's CRDs (the ones `lazyscale crds` prints) on a control plane.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};

use crate::{Error, Result};

/// The field manager the test support applies CRDs with.
const MANAGER: &str = "lazyscale-testenv";

/// Applies lazyscale's CRDs (server-side apply, so calling it again, from any test, is harmless) and
/// waits until each one is established.
///
/// # Errors
/// When the API server refuses a CRD or one is not established within 30 s.
pub async fn install_crds(client: &kube::Client) -> Result<()> {
    apply_crds(client, MANAGER, lazyscale_api::crds()).await
}

/// Applies `crds` with server-side apply under `manager` and waits until each one is established: the
/// one way the test environment installs CRDs (ours, and the peers' such as the VPA's).
///
/// # Errors
/// When the API server refuses a CRD or one is not established within 30 s.
pub async fn apply_crds(
    client: &kube::Client,
    manager: &str,
    crds: impl IntoIterator<Item = CustomResourceDefinition>,
) -> Result<()> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &PatchParams::apply(manager).force(), &Patch::Apply(&crd))
            .await?;
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .map_err(|_| Error::NotReady(format!("CRD {name} not established after 30s")))?
        .map_err(|e| Error::NotReady(format!("CRD {name}: {e}")))?;
    }
    Ok(())
}

//! Helpers for tests that need a real Kubernetes control plane.
//!
//! The envtest tier starts `etcd` and `kube-apiserver` from the folder named
//! by `KUBEBUILDER_ASSETS` (as controller-runtime's `setup-envtest` installs
//! them) and talks to the API server over HTTPS with a static admin token.
//! The kind tier lives in `e2e/kind/`.

pub mod apiserver;
pub mod chart;
pub mod operator;
pub mod pki;

//! The secret store contract, run against the local env and file stores.

use std::{collections::HashMap, sync::Arc};

use daprs_components::{Error, Metadata, registry::Built, secretstores::SecretStore};

use crate::unique;

async fn open(kind: &str, metadata: &[(&str, &str)], env: &HashMap<String, String>) -> Arc<dyn SecretStore> {
    match crate::build(kind, metadata, env).await {
        Built::SecretStore(s) => s,
        _ => panic!("{kind} is not a secret store"),
    }
}

/// A store that holds secret `db-password` = `s3cret` (key of the same name).
async fn suite(s: Arc<dyn SecretStore>) {
    let none = Metadata::new();
    let got = s.get("db-password", &none).await.expect("get");
    assert_eq!(got.get("db-password").map(String::as_str), Some("s3cret"));
    assert!(matches!(
        s.get("no-such-secret", &none).await,
        Err(Error::NotFound(_))
    ));
    let all = s.bulk(&none).await.expect("bulk");
    assert_eq!(all["db-password"]["db-password"], "s3cret");
}

#[tokio::test]
async fn local_env() {
    let env = HashMap::from([
        ("db-password".to_string(), "s3cret".to_string()),
        ("DAPR_API_TOKEN".to_string(), "hidden".to_string()),
    ]);
    let s = open("secretstores.local.env", &[], &env).await;
    assert!(
        s.get("DAPR_API_TOKEN", &Metadata::new()).await.is_err(),
        "Dapr's own variables stay hidden"
    );
    suite(s).await;
}

#[tokio::test]
async fn local_file() {
    let file = std::env::temp_dir().join(format!("{}.json", unique("daprs-conf-secrets")));
    std::fs::write(&file, r#"{"db-password": "s3cret"}"#).expect("write");
    let path = file.display().to_string();
    suite(
        open(
            "secretstores.local.file",
            &[("secretsFile", &path)],
            &HashMap::new(),
        )
        .await,
    )
    .await;
    let _ = std::fs::remove_file(file);
}

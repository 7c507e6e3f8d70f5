//! The `daprs-injector render` command as a user runs it.

use std::{
    io::Write,
    process::{Command, Stdio},
};

fn render(input: &str, args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_daprs-injector"))
        .arg("render")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run daprs-injector");
    // A command that rejects its flags exits without reading stdin.
    let _ = child.stdin.take().expect("stdin").write_all(input.as_bytes());
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
  annotations:
    dapr.io/enabled: \"true\"
    dapr.io/app-port: \"8080\"
    dapr.io/log-level: chatty
spec:
  containers:
  - name: web
    image: nginx
";

#[test]
fn render_prints_objects_and_reports_warnings_on_stderr() {
    let (code, out, err) = render(POD, &["--sidecar-image", "example.com/daprd:9"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("image: example.com/daprd:9"), "{out}");
    assert!(out.contains("name: daprd"));
    assert!(
        !out.contains("restartPolicy: Always"),
        "regular container by default"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("Pod/web: warning: dapr.io/log-level"), "{err}");

    let (code, out, _) = render(POD, &["--native-sidecar", "on"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("initContainers:") && out.contains("restartPolicy: Always"),
        "{out}"
    );
}

#[test]
fn render_fails_clearly_on_refusals_and_bad_input() {
    let refused = POD.replace("name: web\n  annotations:", "name: Web_1\n  annotations:");
    let (code, out, err) = render(&refused, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("Pod/Web_1: not injected: dapr.io/app-id"), "{err}");
    assert!(!out.contains("daprd"), "the object is printed unchanged");

    let (code, out, err) = render("kind: [", &[]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains("not valid YAML"), "{err}");

    let (code, _, err) = render(POD, &["--native-sidecar", "sometimes"]);
    assert_eq!(code, 2);
    assert!(err.contains("sometimes"), "{err}");
}

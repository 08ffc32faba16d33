//! Image builds on the real Docker engine, from the local test base image
//! (`scripts/base-image.sh`; nothing is pulled). Every image and container a test makes
//! carries its run's unique name and is removed when the test ends, passed or failed.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use claude_vm_provider::docker::DockerProvider;
use claude_vm_provider::{BuildSpec, Provider, ProviderError};

/// The local base image the test suite builds.
fn base_image() -> String {
    std::env::var("CLAUDE_VM_TEST_IMAGE")
        .unwrap_or_else(|_| "claude-vm-test-base:bookworm-4".to_owned())
}

/// Label on what a test's Dockerfiles make, naming the test's run.
const RUN_LABEL: &str = "dev.claude-vm.test.build-run";

/// One test's run: unique image tags, all removed on drop with every container and image
/// labelled with the run (a failed build's intermediate containers and images would be).
struct TestRun {
    id: String,
    tags: RefCell<Vec<String>>,
}

impl TestRun {
    fn new(test: &str) -> TestRun {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        TestRun {
            id: format!("{test}-{}-{nanos}", std::process::id()),
            tags: RefCell::new(Vec::new()),
        }
    }

    /// A tag of this run, removed at the end.
    fn tag(&self, name: &str) -> String {
        let tag = format!("claude-vm-test-build-{}-{name}", self.id);
        self.tags.borrow_mut().push(tag.clone());
        tag
    }

    /// A Dockerfile's first lines: the base image, labelled with this run.
    fn dockerfile_head(&self) -> String {
        format!("FROM {}\nLABEL {RUN_LABEL}={}\n", base_image(), self.id)
    }

    /// Containers left labelled with this run.
    async fn leftover_containers(&self) -> String {
        docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label={RUN_LABEL}={}", self.id),
        ])
        .await
        .1
    }
}

impl Drop for TestRun {
    fn drop(&mut self) {
        let filter = format!("label={RUN_LABEL}={}", self.id);
        if let Ok(out) = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f", id])
                    .output();
            }
        }
        for tag in self.tags.borrow().iter() {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", tag])
                .output();
        }
        // What a failed build kept of its steps that succeeded (newest first, children
        // before their parents).
        if let Ok(out) = std::process::Command::new("docker")
            .args(["images", "-aq", "--filter", &filter])
            .output()
        {
            let ids = String::from_utf8_lossy(&out.stdout).into_owned();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .arg("rmi")
                    .args(&ids)
                    .output();
            }
        }
    }
}

/// Run a test's body on a runtime of its own (the run's cleanup happens outside it).
fn run<F: std::future::Future>(body: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(body)
}

fn provider() -> DockerProvider {
    DockerProvider::new(&BTreeMap::new()).expect("a Docker provider")
}

/// An uncompressed tar archive of `files` (path, content).
fn context(files: &[(&str, &str)]) -> Bytes {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        tar.append_data(&mut header, path, content.as_bytes())
            .unwrap();
    }
    Bytes::from(tar.into_inner().unwrap())
}

/// Build `spec`, answering the outcome and every line the output callback saw.
async fn build(
    provider: &DockerProvider,
    spec: &BuildSpec,
) -> (Result<(), ProviderError>, Vec<String>) {
    let lines = Mutex::new(Vec::new());
    let output = |line: &str| lines.lock().unwrap().push(line.to_owned());
    let result = provider.build_image(spec, &output).await;
    (result, lines.into_inner().unwrap())
}

/// `docker ARGS`: success, and stdout trimmed.
async fn docker(args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await
        .expect("the docker CLI runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    )
}

/// What `path` holds in a fresh container of `image` (removed after).
async fn file_in(image: &str, path: &str) -> String {
    let (ok, out) = docker(&["run", "--rm", "--entrypoint", "cat", image, path]).await;
    assert!(ok, "reading {path} in a container of {image}");
    out
}

async fn labels_of(image: &str) -> BTreeMap<String, String> {
    let (ok, out) = docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        image,
    ])
    .await;
    assert!(ok, "inspecting {image}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn a_build_streams_its_output_and_tags_an_image_with_its_args_and_labels() {
    let t = TestRun::new("args");
    let tag = t.tag("image");
    run(async {
        let p = provider();
        let dockerfile = format!(
            "{}ARG GREETING\nRUN echo \"$GREETING\" > /greeting && echo built-line\nLABEL dev.claude-vm.test.from-dockerfile=yes\n",
            t.dockerfile_head()
        );
        let spec = BuildSpec {
            tag: tag.clone(),
            context: context(&[("Dockerfile", &dockerfile)]),
            dockerfile: "Dockerfile".to_owned(),
            args: BTreeMap::from([("GREETING".to_owned(), "hello from an arg".to_owned())]),
            labels: BTreeMap::from([("dev.claude-vm.test.label".to_owned(), "given".to_owned())]),
            ..BuildSpec::default()
        };
        let (result, lines) = build(&p, &spec).await;
        result.expect("the build succeeds");
        assert!(
            lines.iter().any(|l| l == "built-line"),
            "output: {lines:#?}"
        );
        assert!(
            lines.iter().all(|l| !l.is_empty() && !l.ends_with('\n')),
            "output: {lines:#?}"
        );

        assert_eq!(p.has_image(&tag).await.unwrap(), Some(true));
        let labels = labels_of(&tag).await;
        assert_eq!(
            labels.get("dev.claude-vm.test.label").map(String::as_str),
            Some("given")
        );
        assert_eq!(
            labels
                .get("dev.claude-vm.test.from-dockerfile")
                .map(String::as_str),
            Some("yes")
        );
        assert_eq!(file_in(&tag, "/greeting").await, "hello from an arg");
        assert_eq!(
            t.leftover_containers().await,
            "",
            "no intermediate container is left"
        );
    });
}

#[test]
fn building_the_same_image_again_succeeds_from_the_cache() {
    let t = TestRun::new("cache");
    let tag = t.tag("image");
    run(async {
        let p = provider();
        let dockerfile = format!("{}RUN echo cached > /cached\n", t.dockerfile_head());
        let mut spec = BuildSpec {
            tag: tag.clone(),
            context: context(&[("Dockerfile", &dockerfile)]),
            dockerfile: "Dockerfile".to_owned(),
            ..BuildSpec::default()
        };
        build(&p, &spec).await.0.expect("the first build succeeds");
        spec.cache_from = vec![tag.clone()];
        let (result, lines) = build(&p, &spec).await;
        result.expect("the second build succeeds");
        assert!(!lines.is_empty());
        assert_eq!(file_in(&tag, "/cached").await, "cached");
    });
}

#[test]
fn a_dockerfile_at_a_subpath_is_built_with_the_whole_context() {
    let t = TestRun::new("subpath");
    let tag = t.tag("image");
    run(async {
        let p = provider();
        let dockerfile = format!("{}COPY hello.txt /hello.txt\n", t.dockerfile_head());
        let spec = BuildSpec {
            tag: tag.clone(),
            context: context(&[
                (".devcontainer/Dockerfile", &dockerfile),
                ("hello.txt", "from the context's root\n"),
            ]),
            dockerfile: ".devcontainer/Dockerfile".to_owned(),
            ..BuildSpec::default()
        };
        build(&p, &spec).await.0.expect("the build succeeds");
        assert_eq!(file_in(&tag, "/hello.txt").await, "from the context's root");
    });
}

#[test]
fn a_target_builds_that_stage_of_a_multi_stage_dockerfile() {
    let t = TestRun::new("target");
    let tag = t.tag("image");
    run(async {
        let p = provider();
        let base = base_image();
        let dockerfile = format!(
            "FROM {base} AS first\nLABEL {RUN_LABEL}={id}\nRUN echo first > /stage\n\
             FROM {base} AS second\nLABEL {RUN_LABEL}={id}\nRUN echo second > /stage\n",
            id = t.id
        );
        let spec = BuildSpec {
            tag: tag.clone(),
            context: context(&[("Dockerfile", &dockerfile)]),
            dockerfile: "Dockerfile".to_owned(),
            target: Some("first".to_owned()),
            ..BuildSpec::default()
        };
        build(&p, &spec).await.0.expect("the build succeeds");
        assert_eq!(file_in(&tag, "/stage").await, "first");
    });
}

#[test]
fn a_failing_step_answers_build_failed_with_its_last_lines_and_leaves_no_image() {
    let t = TestRun::new("failing");
    let tag = t.tag("image");
    run(async {
        let p = provider();
        let dockerfile = format!(
            "{}RUN echo first-step\nRUN sh -c 'echo about-to-fail; exit 3'\n",
            t.dockerfile_head()
        );
        let spec = BuildSpec {
            tag: tag.clone(),
            context: context(&[("Dockerfile", &dockerfile)]),
            dockerfile: "Dockerfile".to_owned(),
            ..BuildSpec::default()
        };
        let (result, lines) = build(&p, &spec).await;
        let err = result.expect_err("the build fails");
        let ProviderError::BuildFailed {
            tag: failed_tag,
            reason,
            tail,
        } = &err
        else {
            panic!("expected BuildFailed, got {err:?}");
        };
        assert_eq!(failed_tag, &tag);
        assert!(
            reason.contains('3'),
            "the reason gives the exit code: {reason}"
        );
        assert!(tail.iter().any(|l| l == "about-to-fail"), "tail: {tail:#?}");
        assert!(tail.len() <= 20);
        assert!(
            lines.iter().any(|l| l == "about-to-fail"),
            "output: {lines:#?}"
        );
        assert!(err.to_string().contains("about-to-fail"), "{err}");
        assert!(err.hint().unwrap().contains("--rebuild"));

        assert_eq!(p.has_image(&tag).await.unwrap(), Some(false));
        assert_eq!(
            t.leftover_containers().await,
            "",
            "no intermediate container is left"
        );
    });
}

#[test]
fn a_failed_rebuild_leaves_no_image_under_the_tag_an_earlier_build_gave() {
    let t = TestRun::new("rebuild");
    let tag = t.tag("image");
    run(async {
        let p = provider();
        let good = format!("{}RUN echo good > /good\n", t.dockerfile_head());
        let mut spec = BuildSpec {
            tag: tag.clone(),
            context: context(&[("Dockerfile", &good)]),
            dockerfile: "Dockerfile".to_owned(),
            ..BuildSpec::default()
        };
        build(&p, &spec).await.0.expect("the first build succeeds");
        assert_eq!(p.has_image(&tag).await.unwrap(), Some(true));

        let bad = format!("{}RUN exit 1\n", t.dockerfile_head());
        spec.context = context(&[("Dockerfile", &bad)]);
        let err = build(&p, &spec).await.0.expect_err("the rebuild fails");
        assert!(matches!(err, ProviderError::BuildFailed { .. }), "{err:?}");
        assert_eq!(p.has_image(&tag).await.unwrap(), Some(false));
    });
}

#[test]
fn a_missing_dockerfile_answers_build_failed_naming_it() {
    let t = TestRun::new("missing");
    let tag = t.tag("image");
    run(async {
        let p = provider();
        let spec = BuildSpec {
            tag: tag.clone(),
            context: context(&[("README", "no Dockerfile here\n")]),
            dockerfile: "nowhere/Dockerfile".to_owned(),
            ..BuildSpec::default()
        };
        let err = build(&p, &spec).await.0.expect_err("the build fails");
        let ProviderError::BuildFailed { reason, .. } = &err else {
            panic!("expected BuildFailed, got {err:?}");
        };
        assert!(reason.contains("nowhere/Dockerfile"), "{reason}");
        assert!(reason.contains("no Dockerfile"), "{reason}");
        assert_eq!(p.has_image(&tag).await.unwrap(), Some(false));
    });
}

#[test]
fn a_build_on_an_engine_that_is_not_there_answers_unreachable() {
    let p = DockerProvider::new(&BTreeMap::from([(
        "host".to_owned(),
        "unix:///nonexistent/claude-vm-test/docker.sock".to_owned(),
    )]))
    .unwrap();
    let spec = BuildSpec {
        tag: "claude-vm-test-build-unreachable".to_owned(),
        context: context(&[("Dockerfile", "FROM scratch\n")]),
        dockerfile: "Dockerfile".to_owned(),
        ..BuildSpec::default()
    };
    let err = run(build(&p, &spec)).0.expect_err("no engine to build on");
    assert!(matches!(err, ProviderError::Unreachable { .. }), "{err:?}");
}

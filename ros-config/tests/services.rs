//! Service definition fixtures (`testdata/services/`): a RancherOS-style file loads with
//! warnings only and orders into the expected waves; a bad file reports every problem with
//! file:line:column; the same definitions under `rancher.services` in cloud-config follow
//! the same rules.

use std::path::{Path, PathBuf};

use ros_config::service::{check_service_path, load_service_file, Scope};
use ros_config::{start_order, validate_text, Mode, Severity};

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/services")
        .join(name)
}

#[test]
fn rancheros_service_file_loads_and_orders() {
    let path = testdata("good_rancheros_services.yml");
    let (file, diags) = check_service_path(&path);
    let shown: Vec<String> = diags.iter().map(ToString::to_string).collect();
    assert!(
        diags.iter().all(|d| d.severity == Severity::Warning),
        "{shown:#?}"
    );
    // log_driver three times and log_opt once: each named, with its line.
    let p = path.display();
    assert_eq!(
        shown,
        [
            format!("{p}:9:3: system-volumes.log_driver: `log_driver` only tunes Docker and is not used by rOS (output goes to /var/log/ros/NAME.log); ignored"),
            format!("{p}:22:3: udev-cold.log_driver: `log_driver` only tunes Docker and is not used by rOS (output goes to /var/log/ros/NAME.log); ignored"),
            format!("{p}:35:3: udev.log_driver: `log_driver` only tunes Docker and is not used by rOS (output goes to /var/log/ros/NAME.log); ignored"),
            format!("{p}:36:3: udev.log_opt: `log_opt` only tunes Docker and is not used by rOS (rOS rotates service logs itself); ignored"),
        ]
    );
    assert_eq!(file.len(), 5);
    assert!(file["system-volumes"].is_createonly());
    assert!(file["udev-cold"].is_oneshot());
    assert!(file["network"].is_reloadconfig());
    assert_eq!(file["ntp"].scope(), Scope::System);
    assert!(file["ntp"].healthcheck.is_some());
    // The strict entry point PID 1 uses accepts it too (warnings are logged).
    assert_eq!(load_service_file(&path).unwrap(), file);

    let waves = start_order(&file, &[]).unwrap();
    assert_eq!(
        waves,
        [
            vec!["system-volumes"],
            vec!["udev-cold"],
            vec!["udev"],
            vec!["network"],
            vec!["ntp"]
        ]
    );
}

#[test]
fn bad_service_file_reports_everything_at_once() {
    let path = testdata("bad_service_keys.yml");
    let p = path.display();
    let (file, diags) = check_service_path(&path);
    let shown: Vec<(Severity, String)> =
        diags.iter().map(|d| (d.severity, d.to_string())).collect();
    use Severity::{Error, Warning};
    assert_eq!(
        shown,
        [
            (Error, format!("{p}:5:3: web.comand: unknown key `comand` (did you mean `command`?)")),
            (Error, format!("{p}:6:3: web.depends_on: compose key `depends_on` is not supported by rOS: order services with the label `io.rancher.os.after: NAME`")),
            (Error, format!("{p}:7:15: web.privileged: invalid type: string \"sometimes\", expected a boolean")),
            (Error, format!("{p}:9:7: web.volumes[0]: `data:/var/lib/nginx`: named volumes are not supported; the host path must be absolute")),
            (Error, format!("{p}:11:27: web.labels.\"io.rancher.os.detach\": `no` is neither \"true\" nor \"false\"")),
            (Warning, format!("{p}:14:3: db.mem_limit: `mem_limit` only tunes Docker and is not used by rOS (resource limits are not applied); ignored")),
        ]
    );
    assert_eq!(file.keys().collect::<Vec<_>>(), ["db"]);
    let err = load_service_file(&path).unwrap_err().to_string();
    assert_eq!(err.lines().count(), 5, "{err}");
    assert!(err.starts_with(&format!("{p}:5:3: ")), "{err}");
}

#[test]
fn cloud_config_services_accept_docker_only_keys_and_refuse_the_rest() {
    let text = "\
rancher:
  services:
    logger:
      image: busybox
      log_driver: json-file
      labels:
        io.rancher.os.detach: false
    linked:
      image: busybox
      links: [logger]
";
    let diags: Vec<(Severity, String)> = validate_text("cc.yml", text, Mode::Strict)
        .into_iter()
        .map(|d| (d.severity, d.to_string()))
        .collect();
    // `logger` is accepted with a warning for its Docker-only key (an unquoted `false`
    // label too); `linked` is refused and named.
    assert_eq!(
        diags,
        [
            (
                Severity::Warning,
                "cc.yml:5:7: rancher.services.logger.log_driver: `log_driver` only tunes Docker and is not used by rOS (output goes to /var/log/ros/NAME.log); ignored".to_string()
            ),
            (
            Severity::Error,
            "cc.yml:10:14: rancher.services.linked.links: compose key `links` is not supported by rOS: system services share the host network: use `net: host`".to_string()
            )
        ]
    );
    let value = ros_config::Layer::parse("cc.yml", text).unwrap();
    let resolved = ros_config::resolve(vec![value], Mode::Boot);
    let services = &resolved.config.rancher.services;
    assert_eq!(services.keys().collect::<Vec<_>>(), ["logger"]);
    assert_eq!(services["logger"].docker_only_keys, ["log_driver"]);
    assert!(services["logger"].is_oneshot());
    // What PID 1 (or check.rs) needs to warn about: the same problems as in a service file.
    let problems = services["logger"].problems();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].path.to_string(), "log_driver");
    assert_eq!(problems[0].severity, Severity::Warning);
}

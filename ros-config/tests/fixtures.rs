//! Fixture tests: the good files in `testdata/` load clean, and each named bad file reports
//! exactly where (file:line:column), which key, and what, while the rest still applies.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ros_config::schema::{CloudConfig, Encoding};
use ros_config::{resolve, validate_text, Diagnostic, Layer, Mode, Severity};

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

fn fixture(name: &str) -> String {
    fs::read_to_string(testdata(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `(severity, "file:line:column: key: message")` for a fixture in `mode`.
fn report(name: &str, mode: Mode) -> Vec<(Severity, String)> {
    validate_text(name, &fixture(name), mode)
        .into_iter()
        .map(|d| (d.severity, d.to_string()))
        .collect()
}

/// Load one fixture as the only layer, in boot mode.
fn boot(name: &str) -> (CloudConfig, Vec<Diagnostic>) {
    let layer = Layer::parse(name, &fixture(name)).unwrap_or_else(|d| panic!("{d}"));
    let r = resolve(vec![layer], Mode::Boot);
    (r.config, r.diagnostics)
}

use Severity::{Error, Warning};

#[test]
fn good_fixtures_have_no_errors() {
    let mut n = 0;
    for entry in fs::read_dir(testdata("")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if !name.starts_with("good_") {
            continue;
        }
        n += 1;
        let errors: Vec<String> = report(&name, Mode::Strict)
            .into_iter()
            .filter(|(s, _)| *s == Error)
            .map(|(_, m)| m)
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:#?}");
    }
    assert!(n >= 3, "good fixtures missing");
}

#[test]
fn rancheros_user_file_works_unchanged() {
    let name = "good_rancheros_user.yml";
    assert_eq!(
        report(name, Mode::Strict),
        vec![
            (Warning, format!("{name}:110:3: rancher.resize_device: RancherOS key not used by rOS; ignored")),
            (Warning, format!("{name}:111:3: rancher.repositories: RancherOS key not used by rOS (service repositories are not used); ignored")),
            (Warning, format!("{name}:114:3: rancher.restart_services: RancherOS key not used by rOS (config changes are applied live); ignored")),
        ]
    );
    let (cfg, _) = boot(name);
    assert_eq!(
        cfg.hostname.as_ref().map(|h| h.as_str()),
        Some("rancher-node-01")
    );
    assert_eq!(cfg.write_files.len(), 3);
    assert_eq!(cfg.write_files[0].mode(), 0o755);
    assert_eq!(cfg.write_files[1].container.as_deref(), Some("ntp"));
    assert_eq!(cfg.write_files[2].encoding, Encoding::Base64);
    assert_eq!(cfg.write_files[2].decoded_content().unwrap(), b"hello\n");
    assert_eq!(cfg.runcmd[0].argv(), vec!["touch", "/home/rancher/test1"]);
    assert_eq!(cfg.runcmd[1].argv()[..2], ["sh", "-c"]);
    assert_eq!(cfg.mounts[0].field(1), Some("/mnt/s"));
    let r = &cfg.rancher;
    assert_eq!(r.console.as_deref(), Some("alpine"));
    assert_eq!(r.sysctl["vm.max_map_count"], "262144");
    assert_eq!(r.network.interfaces.len(), 5);
    assert_eq!(
        r.network.interfaces["eth0"].address.as_deref(),
        Some("172.68.1.100/24")
    );
    assert_eq!(r.network.interfaces["bond0"].bond_opts["mode"], "4");
    assert_eq!(r.docker.data_root(), Some("/mnt/docker"));
    assert_eq!(r.docker.log_opts["max-file"], "2");
    assert_eq!(r.ssh.port, Some(2222));
    assert_eq!(r.services["nginxapp"].image, "nginx:1.25");
    assert_eq!(r.services_include.get("kernel-headers"), Some(&true));
    assert_eq!(cfg.shutdown_timeout(), Duration::from_secs(90));
}

#[test]
fn bad_syntax_names_the_position_and_skips_the_file() {
    let name = "bad_syntax.yml";
    for mode in [Mode::Strict, Mode::Boot] {
        assert_eq!(
            report(name, mode),
            vec![(
                Error,
                format!("{name}:5:9: mapping values are not allowed in this context; file skipped")
            )]
        );
    }
    assert!(Layer::parse(name, &fixture(name)).is_err());
}

#[test]
fn bad_wrong_type_reports_every_error_and_keeps_the_rest() {
    let name = "bad_wrong_type.yml";
    let want = vec![
        (Error, format!("{name}:5:11: rancher.ssh.port: invalid type: string \"twenty-two\", expected u16")),
        (Error, format!("{name}:6:21: rancher.shutdown_timeout: invalid type: string \"soon\", expected u64")),
        (Error, format!("{name}:9:20: rancher.network.dns.nameservers: invalid type: string \"8.8.8.8\", expected a sequence")),
        (Error, format!("{name}:11:21: rancher.services_include.kernel-headers: invalid type: string \"maybe\", expected a boolean")),
        (Error, format!("{name}:12:18: rancher.modules[1]: invalid type: map, expected a string")),
    ];
    assert_eq!(report(name, Mode::Strict), want);
    assert_eq!(report(name, Mode::Boot), want);
    let (cfg, diags) = boot(name);
    assert_eq!(diags.len(), 5);
    assert_eq!(cfg.hostname.as_ref().map(|h| h.as_str()), Some("typed-box"));
    assert_eq!(cfg.rancher.console.as_deref(), Some("alpine"));
    assert_eq!(
        cfg.rancher.modules,
        vec![ros_config::schema::Text::from("nbd")]
    );
    assert_eq!(cfg.rancher.ssh.port, None);
    assert!(cfg.rancher.services_include.is_empty());
    assert_eq!(cfg.shutdown_timeout(), Duration::from_secs(60));
}

#[test]
fn bad_unknown_key_is_an_error_in_strict_mode_and_a_warning_at_boot() {
    let name = "bad_unknown_key.yml";
    assert_eq!(
        report(name, Mode::Strict),
        vec![
            (Warning, format!("{name}:3:1: users: unknown key `users`; ignored")),
            (Error, format!("{name}:6:3: rancher.netwrok: unknown key `netwrok` (did you mean `network`?)")),
            (Error, format!("{name}:10:5: rancher.ssh.deamon: unknown key `deamon` (did you mean `daemon`?)")),
        ]
    );
    assert_eq!(
        report(name, Mode::Boot),
        vec![
            (Warning, format!("{name}:3:1: users: unknown key `users`; ignored")),
            (Warning, format!("{name}:6:3: rancher.netwrok: unknown key `netwrok` (did you mean `network`?); ignored")),
            (Warning, format!("{name}:10:5: rancher.ssh.deamon: unknown key `deamon` (did you mean `daemon`?); ignored")),
        ]
    );
    let (cfg, _) = boot(name);
    assert_eq!(cfg.rancher.ssh.port, Some(2222));
    assert_eq!(cfg.rancher.console.as_deref(), Some("alpine"));
    assert_eq!(cfg.hostname.as_ref().map(|h| h.as_str()), Some("typo-box"));
}

#[test]
fn bad_base64_drops_only_the_bad_entries() {
    let name = "bad_base64.yml";
    assert_eq!(
        report(name, Mode::Strict),
        vec![
            (Error, format!("{name}:7:14: write_files[1].content: decoding base64 content: invalid character '*' at offset 3")),
            (Error, format!("{name}:9:18: write_files[2].permissions: invalid permissions `0999`: expected an octal mode such as \"0644\"")),
            (Error, format!("{name}:11:11: write_files[3].path: `relative/path` is not an absolute path")),
            (Error, format!("{name}:15:14: write_files[4].content: decompressing gzip content: not gzip data")),
        ]
    );
    let boot_report = report(name, Mode::Boot);
    assert!(
        boot_report[1].1.ends_with("(`write_files[2]` skipped)"),
        "{boot_report:?}"
    );
    let (cfg, _) = boot(name);
    assert_eq!(cfg.write_files.len(), 1);
    assert_eq!(cfg.write_files[0].path, "/etc/good.txt");
}

#[test]
fn bad_alias_bomb_is_refused_quickly() {
    let name = "bad_alias_bomb.yml";
    let start = Instant::now();
    let got = report(name, Mode::Boot);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(
        got,
        vec![(Error, format!("{name}:3:38: more than 50000 values after alias expansion (an alias bomb?); file skipped"))]
    );
}

#[test]
fn bad_deep_nesting_is_refused() {
    let name = "bad_deep_nesting.yml";
    assert_eq!(
        report(name, Mode::Boot),
        vec![(
            Error,
            format!("{name}:67:129: nesting deeper than 64 levels; file skipped")
        )]
    );
}

#[test]
fn shipped_configs_parse_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut n = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            continue;
        }
        n += 1;
        let layer = Layer::read(&path)
            .unwrap_or_else(|d| panic!("{d}"))
            .expect("file listed by read_dir");
        let r = resolve(vec![layer], Mode::Strict);
        assert!(
            r.diagnostics.is_empty(),
            "{}: {:#?}",
            path.display(),
            r.diagnostics
        );
    }
    assert!(n >= 2, "no configs under {}", dir.display());
}

#[test]
fn built_in_defaults_say_what_the_docs_say() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/os-config.yml");
    let layer = Layer::read(&path).unwrap().unwrap();
    let cfg = resolve(vec![layer], Mode::Strict).config;
    let r = &cfg.rancher;
    assert_eq!(cfg.hostname.as_ref().map(|h| h.as_str()), Some("rancher"));
    assert_eq!(r.shutdown_timeout, Some(60));
    assert!(r.cloud_init.datasources.is_empty());
    assert_eq!(r.state.dev.as_deref(), Some("LABEL=RANCHER_STATE"));
    assert_eq!(r.state.fstype.as_deref(), Some("auto"));
    assert_eq!(r.network.interfaces["eth0"].dhcp, Some(true));
}

//! Property tests: nothing a user (or an attacker) can put in a config file, user-data or
//! the kernel command line makes the loader panic; what it keeps always re-validates clean.

use proptest::prelude::*;
use ros_config::{
    export, get, merge, parse_user_data, resolve, set, to_yaml, validate_text, validate_value,
    Cmdline, Layer, Mapping, Mode, Severity, Value,
};

/// Keys from the schema (and some that are not), so generated documents reach deep code.
const KEYS: &[&str] = &[
    "hostname",
    "rancher",
    "write_files",
    "runcmd",
    "bootcmd",
    "mounts",
    "ssh_authorized_keys",
    "path",
    "content",
    "encoding",
    "permissions",
    "owner",
    "network",
    "interfaces",
    "eth0",
    "mac=00:11",
    "dhcp",
    "address",
    "addresses",
    "gateway",
    "mtu",
    "dns",
    "nameservers",
    "services",
    "web",
    "image",
    "restart",
    "services_include",
    "sysctl",
    "net.ipv4.ip_forward",
    "modules",
    "ssh",
    "port",
    "keys",
    "docker",
    "tls",
    "server_key",
    "state",
    "dev",
    "autoformat",
    "cloud_init",
    "datasources",
    "shutdown_timeout",
    "password",
    "bogus",
    "<<",
    "1",
];

const SCALARS: &[&str] = &[
    "true",
    "0",
    "60",
    "-1",
    "99999999999999999999",
    "1.5",
    "~",
    "\"\"",
    "b64",
    "gz+b64",
    "\"0644\"",
    "0999",
    "/etc/x",
    "x/y",
    "10.0.0.1/24",
    "8.8.8.8",
    "LABEL=RANCHER_STATE",
    "aGVsbG8=",
    "\"not base64\"",
    "nginx:1",
    "always",
    "ec2",
    "'*'",
    "!tag x",
    "&a 1",
    "*a",
];

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop::sample::select(SCALARS).prop_map(|s| {
        // Bounded: single short scalars.
        Value::String(s.to_string())
    });
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Sequence),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..5).prop_map(|kv| {
                let mut m = Mapping::new();
                for (k, v) in kv {
                    m.insert(Value::String(k.to_string()), v);
                }
                Value::Mapping(m)
            }),
        ]
    })
}

/// Turn the quoted scalars of a generated tree back into YAML syntax, so that tags,
/// anchors, aliases and typed scalars appear in the text.
fn render(v: &Value) -> String {
    let text = to_yaml(v).unwrap_or_default();
    text.replace('\'', "")
}

/// Key paths of the schema (some misspelled or misplaced on purpose).
const PATHS: &[&str] = &[
    "hostname",
    "rancher.ssh.port",
    "rancher.ssh.daemon",
    "rancher.ssh.keys.ssh_host_rsa_key",
    "rancher.network.dns.nameservers",
    "rancher.network.interfaces.eth0.address",
    "rancher.network.interfaces.eth0.dhcp",
    "rancher.network.interfaces.eth0.mtu",
    "rancher.network.interfaces.mac=zz.dhcp",
    "rancher.network.interfaces.eth1.gateway",
    "rancher.services.web.image",
    "rancher.services.web.restart",
    "rancher.services.web.user",
    "rancher.services.web.volumes_from",
    "rancher.services_include.x",
    "rancher.sysctl.net.ipv4.ip_forward",
    "rancher.sysctl.bad..key",
    "rancher.modules",
    "rancher.state.autoformat",
    "rancher.state.dev",
    "rancher.cloud_init.datasources",
    "rancher.shutdown_timeout",
    "rancher.docker.tls",
    "rancher.docker.log_opts.max-size",
    "rancher.netwrok.dns",
    "rancher.upgrade.rollback",
    "rancher.resize_device",
    "rancher.defaults.hostname",
    "runcmd",
    "bootcmd",
    "mounts",
    "ssh_authorized_keys",
    "users",
    "rancher",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        (-3i64..70000).prop_map(Value::from),
        prop::sample::select(SCALARS).prop_map(|s| Value::String(s.to_string())),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => scalar(),
        2 => prop::collection::vec(scalar(), 0..4).prop_map(Value::Sequence),
        1 => prop::collection::vec(prop::collection::vec(scalar(), 0..5).prop_map(Value::Sequence), 0..3)
            .prop_map(Value::Sequence),
    ]
}

fn write_file() -> impl Strategy<Value = Value> {
    const FIELDS: &[&str] = &[
        "path",
        "content",
        "encoding",
        "permissions",
        "owner",
        "container",
        "append",
    ];
    prop::collection::vec((prop::sample::select(FIELDS), scalar()), 0..6).prop_map(|kv| {
        let mut m = Mapping::new();
        for (k, v) in kv {
            m.insert(Value::String(k.to_string()), v);
        }
        Value::Mapping(m)
    })
}

/// Config trees shaped like the schema, with wrong types and wrong keys mixed in.
fn schema_shaped() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec((prop::sample::select(PATHS), leaf()), 0..12),
        prop::collection::vec(write_file(), 0..4),
    )
        .prop_map(|(entries, files)| {
            let mut root = Value::mapping();
            for (path, leaf) in entries {
                let mut node = &mut root;
                for key in path.split('.') {
                    if !node.is_mapping() {
                        *node = Value::mapping();
                    }
                    let Value::Mapping(m) = node else {
                        unreachable!()
                    };
                    node = m.entry_or_insert_with(key, || Value::Null);
                }
                *node = leaf;
            }
            if !files.is_empty() {
                if let Value::Mapping(m) = &mut root {
                    m.insert(Value::String("write_files".into()), Value::Sequence(files));
                }
            }
            root
        })
}

fn no_errors_in_clean_value(value: &Value) -> Result<(), TestCaseError> {
    let errors: Vec<String> = validate_value("<clean>", value, Mode::Boot)
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.to_string())
        .collect();
    prop_assert!(
        errors.is_empty(),
        "cleaned value still has errors: {errors:#?}"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = validate_text("fuzz.yml", &text, Mode::Strict);
        let _ = validate_text("fuzz.yml", &text, Mode::Boot);
        let _ = parse_user_data(&bytes);
        let c = Cmdline::parse(&text);
        let _ = resolve(vec![c.layer()], Mode::Boot);
    }

    #[test]
    fn arbitrary_yaml_like_text_never_panics(text in "[a-z:\\-\\[\\]{}&*!#|>'\" ,\n]{0,200}") {
        let _ = validate_text("fuzz.yml", &text, Mode::Boot);
        let _ = validate_text("fuzz.yml", &text, Mode::Strict);
    }

    #[test]
    fn generated_configs_load_and_what_is_kept_is_valid(v in value()) {
        let text = render(&v);
        if let Ok(layer) = Layer::parse("gen.yml", &text) {
            let r = resolve(vec![layer], Mode::Boot);
            no_errors_in_clean_value(&r.value)?;
            let _ = export(&r.value, false);
        }
    }

    #[test]
    fn schema_shaped_configs_load_and_what_is_kept_is_valid(v in schema_shaped(), strict in any::<bool>()) {
        let text = to_yaml(&v).unwrap_or_default();
        let layer = Layer::parse("gen.yml", &text);
        prop_assert!(layer.is_ok(), "generated YAML did not parse: {text}");
        let mode = if strict { Mode::Strict } else { Mode::Boot };
        let r = resolve(layer.into_iter().collect(), mode);
        no_errors_in_clean_value(&r.value)?;
        for d in &r.diagnostics {
            prop_assert!(d.line > 0, "diagnostic without a position: {d}\n{text}");
        }
    }

    #[test]
    fn layering_generated_configs_never_panics(a in schema_shaped(), b in schema_shaped()) {
        let la = Layer::parse("a.yml", &to_yaml(&a).unwrap_or_default());
        let lb = Layer::parse("b.yml", &to_yaml(&b).unwrap_or_default());
        let layers: Vec<Layer> = [la, lb].into_iter().filter_map(Result::ok).collect();
        let r = resolve(layers, Mode::Boot);
        no_errors_in_clean_value(&r.value)?;
        let _ = merge(a, b);
    }

    #[test]
    fn get_and_set_never_panic(
        v in value(),
        key in "[a-z_.\\[\\]0-9\"]{0,30}",
        val in "[a-z0-9,\\[\\] :\"']{0,20}",
    ) {
        let _ = get(&v, &key);
        let mut w = v.clone();
        if set(&mut w, &key, &val).is_err() {
            prop_assert_eq!(w, v);
        }
    }

    #[test]
    fn command_lines_never_panic(words in prop::collection::vec("rancher\\.[a-z_.]{0,20}(=[a-z0-9\\[\\],\" ]{0,12})?", 0..8)) {
        let line = words.join(" ");
        let loaded = Cmdline::parse(&line);
        let r = resolve(vec![loaded.layer()], Mode::Boot);
        no_errors_in_clean_value(&r.value)?;
    }
}

//! Boot tests for issue 21: booting where users' machines are. The root on IDE, SATA, NVMe
//! and SCSI disks with the network cards of the hypervisors that use them; the ISO on QEMU's
//! `pc` and `q35`, from RAM; a diskless PXE boot through QEMU's TFTP server and iPXE with the
//! node's config from a URL; the `url:`, `cmdline` and NoCloud-over-HTTP datasources after
//! PID 1's early DHCP, and an unreachable one that does not stop the boot.

use std::fs;
use std::time::Duration;

use boot_tests::{image_dir, private_ca, BootOptions, HttpServer, TempDir, Vm};

const BOOT: Duration = Duration::from_secs(240);

/// The image's root partition, whatever the controller calls the disk.
const ROOT: &str = "root=PARTUUID=524f5330-02";

/// Wait until the first NIC has QEMU's DHCP address (the network service's lease).
fn leased(vm: &mut Vm) {
    vm.until("ip -4 addr show dev eth0 | grep -q 'inet 10.0.2.15/'");
}

#[test]
#[ignore = "boots QEMU: run with `make boot-test`"]
fn the_root_boots_from_ide_sata_nvme_and_scsi_disks_with_their_network_cards() {
    let tmp = TempDir::new("controllers");
    // Config drives on CD-ROMs, as Proxmox (NoCloud on IDE) and OpenStack (config-2) attach
    // them: each sets the hostname, the NoCloud one an ssh key too.
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTheCdromTest cd@test";
    let cidata = boot_tests::config_drive_iso(
        tmp.path(),
        "cidata",
        &format!("#cloud-config\nhostname: from-cidata\nssh_authorized_keys:\n  - {key}\n"),
    );
    let config2 = boot_tests::config_drive_iso(
        tmp.path(),
        "config-2",
        "#cloud-config\nhostname: from-config-2\n",
    );
    let cd = |iso: &std::path::Path, bus: &str| {
        vec![
            "-drive".to_string(),
            format!(
                "if=none,id=cd,file={},format=raw,media=cdrom,readonly=on",
                iso.display()
            ),
            "-device".to_string(),
            format!("ide-cd,drive=cd,bus={bus}"),
        ]
    };
    // (controller, machine, NIC, the root device the kernel names, a CD-ROM and the
    // hostname it gives): as QEMU's pc and q35, VMware, Proxmox/GCE and AWS have them.
    let cases = [
        (
            "ide",
            "pc",
            "e1000",
            "/dev/sda2",
            cd(&cidata, "ide.1"),
            "from-cidata",
        ),
        (
            "ahci",
            "q35",
            "e1000e",
            "/dev/sda2",
            cd(&config2, "ide.2"),
            "from-config-2",
        ),
        ("nvme", "pc", "vmxnet3", "/dev/nvme0n1p2", vec![], "rancher"),
        (
            "virtio-scsi",
            "pc",
            "rtl8139",
            "/dev/sda2",
            vec![],
            "rancher",
        ),
        (
            "pvscsi",
            "pc",
            "virtio-net-pci",
            "/dev/sda2",
            vec![],
            "rancher",
        ),
        // The root on virtio, the config drive on the IDE CD-ROM: found too when the
        // datasources list `configdrive` (without it, a virtio boot drives no IDE port).
        (
            "virtio",
            "pc",
            "virtio-net-pci",
            "/dev/vda2",
            cd(&cidata, "ide.1"),
            "from-cidata",
        ),
    ];
    for (controller, machine, nic, device, cdrom, hostname) in cases {
        let mut vm = Vm::boot(&BootOptions {
            root_arg: ROOT.into(),
            controller: (controller != "virtio").then_some(controller),
            append: if controller == "virtio" {
                "rancher.cloud_init.datasources=[configdrive]".into()
            } else {
                String::new()
            },
            nic,
            qemu_args: ["-machine".to_string(), machine.to_string()]
                .into_iter()
                .chain(cdrom)
                .collect(),
            ..Default::default()
        });
        vm.console_up(BOOT);
        let out = vm.output();
        assert!(
            out.lines()
                .any(|l| l.starts_with("ROS BOOT root ") && l.ends_with(&format!(" {device}"))),
            "{controller}: the root is not {device}\n{}",
            vm.tail(40)
        );
        assert_eq!(
            out.contains("is not on a virtio disk")
                && out.contains("root: loading the other disk drivers"),
            controller != "virtio",
            "{controller}: {}",
            vm.tail(40)
        );
        vm.all_services_up();
        // The NIC's driver came from the root image (udev), and the network service leased.
        leased(&mut vm);
        assert_eq!(vm.sh("hostname"), hostname, "{controller}");
        if hostname == "from-cidata" {
            assert_eq!(
                vm.sh("grep -c CdromTest /home/rancher/.ssh/authorized_keys"),
                "1"
            );
        }
        drop(vm);
    }
}

/// QEMU arguments for `machine` with the ISO in its CD-ROM drive, booted from it, and
/// `more` after them.
fn iso_args(machine: &str, more: &[String]) -> Vec<String> {
    let iso = image_dir().join("ros.iso");
    ["-machine", machine, "-boot", "d", "-cdrom"]
        .map(String::from)
        .into_iter()
        .chain([iso.display().to_string()])
        .chain(more.iter().cloned())
        .collect()
}

/// Boot the ISO on `machine` up to its console, which logs in by itself as RancherOS's did;
/// the whole system runs from RAM. `firmware`: more QEMU arguments (UEFI's), and what its
/// bootloader prints on the serial console.
fn boot_iso(machine: &str, more: &[String], firmware: (&[String], &str)) -> Vm {
    let (uefi, bootloader) = firmware;
    let mut vm = Vm::boot(&BootOptions {
        firmware: true,
        qemu_args: uefi
            .iter()
            .cloned()
            .chain(iso_args(machine, more))
            .collect(),
        ..Default::default()
    });
    // Its own bootloader, on the serial console too.
    vm.wait_for(bootloader, BOOT);
    vm.console_up(BOOT);
    let out = vm.output();
    assert!(
        out.contains("root: /ros/root.squashfs from the initramfs, in RAM")
            && out.contains("running from RAM"),
        "{machine}: {}",
        vm.tail(40)
    );
    vm
}

/// BIOS: SeaBIOS, QEMU's default, and the ISO's isolinux.
const BIOS: (&[String], &str) = (&[], "ISOLINUX");

#[test]
#[ignore = "boots QEMU: run with `make boot-test`"]
fn the_iso_boots_from_ram_without_a_disk_under_bios_and_uefi() {
    let mut vm = boot_iso("pc", &[], BIOS);
    vm.all_services_up();
    assert_eq!(
        vm.sh("ls /sys/block | grep -c -e '^sd' -e '^vd' || true"),
        "0"
    );
    drop(vm);

    // UEFI: Debian's OVMF on q35, its variables in a copy of their own; the ISO's El Torito
    // EFI entry (GRUB).
    let tmp = TempDir::new("uefi");
    let uefi = boot_tests::uefi_args(tmp.path());
    let mut vm = boot_iso("q35", &[], (&uefi, "GNU GRUB"));
    assert!(
        vm.sh("ls /sys/firmware/efi/").contains("efivars"),
        "not booted under UEFI"
    );
    vm.all_services_up();
}

#[test]
#[ignore = "boots QEMU: run with `make boot-test`"]
fn ros_install_from_the_iso_makes_a_sata_disk_that_boots_by_itself() {
    let tmp = TempDir::new("iso-install");
    let target = tmp.path().join("sata.qcow2");
    boot_tests::blank_qcow2(&target, "1G");
    // q35: its AHCI controller holds the CD-ROM and the disk.
    let disk = [
        "-drive".to_string(),
        format!("if=none,id=d1,file={},format=qcow2", target.display()),
        "-device".to_string(),
        "ide-hd,drive=d1,bus=ide.0".to_string(),
    ];
    let mut vm = boot_iso("q35", &disk, BIOS);
    vm.all_services_up();
    vm.sh("printf 'hostname: from-iso\\nrancher:\\n  password: t3st-Pw\\n' > /tmp/cc.yml");
    let (out, status) = vm.run(
        "ros install -d /dev/sda -c /tmp/cc.yml -f --no-reboot 2>&1",
        Duration::from_secs(600),
    );
    assert_eq!(status, 0, "{out}\n{}", vm.tail(30));
    // The kernel and initrd came from the CD it booted from.
    assert!(
        out.contains("installed to /dev/sda") && out.contains("copying /run/ros/install-boot-"),
        "{out}"
    );
    vm.send("poweroff");
    assert!(vm.wait_exit(Duration::from_secs(120)).success());

    // The disk alone, on the same controller: its bootloader, then a login prompt.
    let mut vm = Vm::boot(&BootOptions {
        firmware: true,
        autologin: false,
        qemu_args: ["-machine", "q35"]
            .map(String::from)
            .into_iter()
            .chain(disk)
            .collect(),
        ..Default::default()
    });
    vm.login_as_root("rancher", "t3st-Pw", BOOT);
    assert_eq!(vm.sh("hostname"), "from-iso");
    let mounts = vm.sh("awk '$2==\"/\" || $2==\"/mnt/state\" {print $1, $2, $3}' /proc/1/mounts");
    assert!(mounts.contains("/dev/loop0 / squashfs"), "{mounts}");
    assert!(mounts.contains("/dev/sda1 /mnt/state ext4"), "{mounts}");
    vm.all_services_up();
}

#[test]
#[ignore = "boots QEMU: run with `make boot-test`"]
fn pxe_boots_without_a_disk_and_takes_its_config_from_a_url() {
    let out = image_dir().join("pxe");
    let tftp = TempDir::new("pxe");
    // The build's TFTP directory, with the node's config URL added to its kernel line as
    // its comment says.
    for f in ["vmlinuz", "initrd", "root.cpio"] {
        std::os::unix::fs::symlink(out.join(f), tftp.path().join(f)).unwrap();
    }
    let web = TempDir::new("pxe-web");
    fs::write(
        web.path().join("node.yml"),
        "#cloud-config\nhostname: pxe-node\nwrite_files:\n  - path: /etc/pxe-marker\n    content: from the URL\n",
    )
    .unwrap();
    let server = HttpServer::serve(web.path());
    let script = fs::read_to_string(out.join("boot.ipxe")).unwrap();
    let url = format!("http://10.0.2.2:{}/node.yml", server.port);
    assert!(script.contains("\nkernel vmlinuz "), "{script}");
    let script = script.replace(
        "\nkernel vmlinuz ",
        &format!("\nkernel vmlinuz cloud-config-url={url} "),
    );
    fs::write(tftp.path().join("boot.ipxe"), script).unwrap();

    let mut vm = Vm::boot(&BootOptions {
        firmware: true,
        netdev: format!(
            "user,id=n0,tftp={},bootfile=boot.ipxe",
            tftp.path().display()
        ),
        qemu_args: ["-boot", "n"].map(String::from).to_vec(),
        ..Default::default()
    });
    vm.console_up(Duration::from_secs(420));
    let console = vm.output();
    // PID 1 leased an address for the datasource, fetched it and said how long it took.
    assert!(
        console.contains("leased by DHCP in") && console.contains("fetched in"),
        "{}",
        vm.tail(40)
    );
    assert!(console.contains("running from RAM"), "{}", vm.tail(40));
    assert_eq!(vm.sh("hostname"), "pxe-node");
    // write_files writes the host's files (PID 1's root, seen from the console).
    assert_eq!(vm.sh("cat /proc/1/root/etc/pxe-marker"), "from the URL");
    vm.all_services_up();
    leased(&mut vm);
    assert_eq!(
        vm.sh("ls /sys/block | grep -c -e '^sd' -e '^vd' || true"),
        "0"
    );
}

#[test]
#[ignore = "boots QEMU: run with `make boot-test`"]
fn url_and_nocloud_datasources_are_fetched_after_an_early_dhcp() {
    let web = TempDir::new("ds-web");
    fs::write(
        web.path().join("cc.yml"),
        "#cloud-config\nhostname: from-url\n",
    )
    .unwrap();
    fs::create_dir(web.path().join("seed")).unwrap();
    fs::write(
        web.path().join("seed/user-data"),
        "#cloud-config\nhostname: from-nocloud\n",
    )
    .unwrap();
    let server = HttpServer::serve(web.path());
    let base = format!("http://10.0.2.2:{}", server.port);
    // A port nothing listens on: refused at every attempt until the datasources' bound.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);

    // url: first, then an unreachable one: the first is applied, the second fails with an
    // error on the console within the bound (rancher.cloud_init.timeout, 60 s unless set),
    // and the boot goes on.
    let mut vm = Vm::boot(&BootOptions {
        append: format!(
            "rancher.cloud_init.timeout=15 \
             rancher.cloud_init.datasources=[url:{base}/cc.yml,url:http://10.0.2.2:{dead_port}/none.yml]"
        ),
        ..Default::default()
    });
    vm.console_up(BOOT);
    let console = vm.output();
    assert!(console.contains("leased by DHCP in"), "{}", vm.tail(40));
    assert!(
        console.contains(&format!("url:{base}/cc.yml")) && console.contains("fetched in"),
        "{}",
        vm.tail(40)
    );
    assert!(
        console.contains(&format!(
            "GET http://10.0.2.2:{dead_port}/none.yml: gave up after"
        )) && console.contains("(timeout 1"),
        "{}",
        vm.tail(40)
    );
    assert_eq!(vm.sh("hostname"), "from-url");
    // The network service owns the network afterwards: its own lease on eth0.
    vm.all_services_up();
    leased(&mut vm);
    drop(vm);

    // NoCloud over HTTP, as cloud-init's `ds=` has it on the kernel line.
    let mut vm = Vm::boot(&BootOptions {
        append: format!("ds=nocloud;s={base}/seed/"),
        ..Default::default()
    });
    vm.console_up(BOOT);
    assert_eq!(vm.sh("hostname"), "from-nocloud");
}

#[test]
#[ignore = "boots QEMU: run with `make boot-test`"]
fn an_https_datasource_trusts_the_configured_ca_and_refuses_others() {
    let tmp = TempDir::new("https");
    let web = tmp.path().join("web");
    fs::create_dir(&web).unwrap();
    fs::write(web.join("cc.yml"), "#cloud-config\nhostname: over-https\n").unwrap();
    let (ca, cert, key) = private_ca(tmp.path());
    let server = HttpServer::serve_tls(&web, &cert, &key);
    let url = format!("https://10.0.2.2:{}/cc.yml", server.port);

    // Without the CA (the public roots only): refused at once, said on the console, and the
    // boot goes on.
    let mut vm = Vm::boot(&BootOptions {
        append: format!("rancher.cloud_init.datasources=[url:{url}]"),
        ..Default::default()
    });
    vm.console_up(BOOT);
    let out = vm.output();
    assert!(
        out.contains(&format!("url:{url}"))
            && out.contains("invalid peer certificate: UnknownIssuer"),
        "{}",
        vm.tail(40)
    );
    assert_eq!(vm.sh("hostname"), "rancher");
    drop(vm);

    // With it, in the user config on the state disk (read before the datasources).
    let state = tmp.path().join("state");
    let conf = state.join("var/lib/rancher/conf");
    fs::create_dir_all(&conf).unwrap();
    let indented: String = ca.lines().map(|l| format!("        {l}\n")).collect();
    fs::write(
        conf.join("cloud-config.yml"),
        format!(
            "rancher:\n  cloud_init:\n    datasources: [\"url:{url}\"]\n    ca_certs:\n      - |\n{indented}"
        ),
    )
    .unwrap();
    let disk = tmp.path().join("state.img");
    let made = std::process::Command::new("mke2fs")
        .args(["-q", "-t", "ext4", "-L", "RANCHER_STATE", "-d"])
        .arg(&state)
        .arg(&disk)
        .arg("64M")
        .status()
        .expect("mke2fs (make deps installs e2fsprogs)");
    assert!(made.success());
    let mut vm = Vm::boot(&BootOptions {
        qemu_args: vec![
            "-drive".into(),
            format!("file={},if=virtio,format=raw", disk.display()),
        ],
        ..Default::default()
    });
    vm.console_up(BOOT);
    assert!(vm.output().contains("fetched in"), "{}", vm.tail(40));
    assert_eq!(vm.sh("hostname"), "over-https");
}

//! Tests of the configuration file: every section, the packaged example, permissions,
//! the archive, the STIX layout.

use super::*;

#[test]
fn parses_every_section_and_refuses_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.toml");
    std::fs::write(
        &p,
        r#"
bind = "0.0.0.0:7000"
out = "/srv/gapferry"
keys = ["/etc/gapferry/a.key", "/etc/gapferry/b.key"]
session_timeout = 60
mtu = 1500
[dirs]
misp = "/var/www/MISP/feed"
[images]
keep = 5
[hooks]
image = ["lxc", "image", "import", "{path}"]
[limits]
max_object_size = 1000
max_queue_bytes = 16777216
max_document = 33554432
"#,
    )
    .unwrap();
    let c = FileConfig::load(&p).unwrap();
    assert_eq!(c.keys.len(), 2);
    assert_eq!(c.mtu, Some(1500));
    assert_eq!(c.limits.max_queue_bytes, Some(16 << 20));
    assert_eq!(c.limits.max_document, Some(32 << 20));
    let d = c.destinations(Path::new("/srv/gapferry")).unwrap();
    assert_eq!(d.misp, Path::new("/var/www/MISP/feed"));
    assert_eq!(d.stix, Path::new("/srv/gapferry/stix"));
    assert_eq!(d.keep_images, 5);
    assert_eq!(d.hooks.image.as_ref().unwrap()[3], "{path}");
    std::fs::write(&p, "[hooks]\nfile = [\"sh\", \"-c\", \"cp {path} /x\"]\n").unwrap();
    let e = FileConfig::load(&p).unwrap_err().to_string();
    assert!(e.contains("GAPFERRY_PATH") && e.contains("r.toml"), "{e}");
    std::fs::write(&p, "[hooks]\nworkers = 2\nqueue = 10\ntimeout = 5\n").unwrap();
    let c = FileConfig::load(&p).unwrap();
    assert_eq!(
        (c.hooks.workers, c.hooks.queue, c.hooks.timeout),
        (Some(2), Some(10), Some(5))
    );
    std::fs::write(&p, "bnid = 1\n").unwrap();
    let e = FileConfig::load(&p).unwrap_err().to_string();
    assert!(e.contains("bnid"), "{e}");
}

mod example {
    #[test]
    fn the_packaged_example_parses() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../packaging/gapferry-recv.toml");
        let c = super::FileConfig::load(&p).unwrap();
        assert_eq!(c.keys.len(), 1);
        assert_eq!(c.images.keep, Some(3));
        let p = c
            .destinations(std::path::Path::new("/x"))
            .unwrap()
            .permissions;
        assert_eq!(p.misp.file_mode, 0o644);
        assert_eq!(p.files.dir_mode, 0o755);
    }
}

mod permissions {
    use super::*;
    use gapferry_common::ObjectKind;

    fn load(text: &str) -> Result<FileConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.toml");
        std::fs::write(&p, text).unwrap();
        FileConfig::load(&p).map_err(|e| e.to_string())
    }

    #[test]
    fn the_archive_is_on_for_30_days_by_default_and_configurable() {
        let d = load("").unwrap().destinations(Path::new("/o")).unwrap();
        assert!(d.archive.enabled);
        assert_eq!(d.archive.keep.as_secs(), 30 * 86_400);
        let c = load("[archive]\nenabled = false\nkeep_days = 7\n").unwrap();
        let d = c.destinations(Path::new("/o")).unwrap();
        assert!(!d.archive.enabled);
        assert_eq!(d.archive.keep.as_secs(), 7 * 86_400);
        let e = load("[archive]\nkeep = 7\n").unwrap_err();
        assert!(e.contains("keep"), "{e}");
    }

    fn resolved(text: &str) -> Permissions {
        load(text)
            .unwrap()
            .destinations(Path::new("/out"))
            .unwrap()
            .permissions
    }

    #[test]
    fn defaults_are_0644_files_and_0755_directories_without_a_group() {
        let p = resolved("");
        for kind in [
            ObjectKind::Misp,
            ObjectKind::Stix,
            ObjectKind::Image,
            ObjectKind::ImageSignature,
            ObjectKind::File,
        ] {
            let k = p.for_kind(kind);
            assert_eq!(
                (k.file_mode, k.dir_mode, k.gid),
                (0o644, 0o755, None),
                "{kind}"
            );
        }
        assert_eq!(p.default, Publish::default());
    }

    #[test]
    fn a_kind_overrides_the_defaults_key_by_key() {
        let p = resolved(
            r#"
[permissions]
file_mode = "0640"
dir_mode = "0o750"
group = "0"
[permissions.misp]
file_mode = "644"
group = "root"
[permissions.files]
dir_mode = "0700"
file_mode = "0600"
"#,
        );
        assert_eq!(
            (p.default.file_mode, p.default.dir_mode, p.default.gid),
            (0o640, 0o750, Some(0))
        );
        assert_eq!(
            (p.misp.file_mode, p.misp.dir_mode, p.misp.gid),
            (0o644, 0o750, Some(0))
        );
        assert_eq!((p.files.file_mode, p.files.dir_mode), (0o600, 0o700));
        assert_eq!(p.stix, p.default);
        assert_eq!(p.for_kind(ObjectKind::ImageSignature), p.images);
    }

    #[test]
    fn bad_modes_are_refused_at_load_with_the_key_and_a_fix() {
        for (text, expect) in [
            ("[permissions]\nfile_mode = \"04644\"\n", "setuid"),
            ("[permissions]\ndir_mode = \"2755\"\n", "setgid"),
            ("[permissions.stix]\ndir_mode = \"1777\"\n", "sticky"),
            ("[permissions]\nfile_mode = \"10644\"\n", "above 07777"),
            (
                "[permissions]\nfile_mode = \"0o77777777777\"\n",
                "above 07777",
            ),
            ("[permissions]\nfile_mode = \"0689\"\n", "octal"),
            ("[permissions]\nfile_mode = \"\"\n", "octal"),
            ("[permissions]\nfile_mode = \"-644\"\n", "octal"),
            ("[permissions]\nfile_mode = \"rw-r--r--\"\n", "octal"),
            ("[permissions.images]\nfile_mode = \"0755\"\n", "executable"),
            ("[permissions]\nfile_mode = \"0444\"\n", "owner needs rw"),
            (
                "[permissions.files]\ndir_mode = \"0555\"\n",
                "owner needs rwx",
            ),
            ("[permissions]\nfile_mode = 420\n", "string"),
            ("[permissions]\nmode = \"0644\"\n", "mode"),
            ("[permissions.misp]\nowner = \"www-data\"\n", "owner"),
            ("[permissions.mips]\ngroup = \"0\"\n", "mips"),
        ] {
            let e = load(text).unwrap_err();
            assert!(e.contains(expect), "{text:?}: {e}");
        }
        let e = load("[permissions.stix]\ndir_mode = \"1777\"\n").unwrap_err();
        assert!(e.contains("[permissions.stix] dir_mode = \"1777\""), "{e}");
    }

    #[test]
    fn a_group_that_does_not_exist_is_refused_at_load() {
        let e = load("[permissions.misp]\ngroup = \"no-such-group-gapferry\"\n").unwrap_err();
        assert!(e.contains("[permissions.misp] group"), "{e}");
        assert!(
            e.contains("no group named \"no-such-group-gapferry\""),
            "{e}"
        );
        assert!(e.contains("groupadd"), "{e}");
        let e = load("[permissions]\ngroup = \"99999999999\"\n").unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        let e = load("[permissions]\ngroup = \"a\\u0000b\"\n").unwrap_err();
        assert!(e.contains("no group named"), "{e}");
    }

    #[test]
    fn a_group_name_resolves_through_the_group_database() {
        // Every Linux system has group 0 named root.
        assert_eq!(
            resolved("[permissions]\ngroup = \"root\"\n").default.gid,
            Some(0)
        );
        assert_eq!(
            resolved("[permissions.images]\ngroup = \"0\"\n").images.gid,
            Some(0)
        );
    }

    #[test]
    fn stix_layout_is_plain_by_default_and_opencti_when_asked() {
        let layout = |text: &str| {
            load(text)
                .unwrap()
                .destinations(Path::new("/out"))
                .unwrap()
                .stix_layout
        };
        assert_eq!(layout(""), gapferry_feeds::StixLayout::Plain);
        assert_eq!(
            layout("[stix]\nlayout = \"plain\"\n"),
            gapferry_feeds::StixLayout::Plain
        );
        let gapferry_feeds::StixLayout::OpenCti(import) = layout(
            "[stix]\nlayout = \"opencti\"\nopencti_connector_id = \"5A0A9AA9-23A4-4607-B6DF-41A9950D210F\"\nopencti_applicant_id = \"low-side-user\"\n",
        ) else {
            panic!("not the OpenCTI layout");
        };
        assert_eq!(import.connector_id, "5a0a9aa9-23a4-4607-b6df-41a9950d210f");
        assert_eq!(import.applicant_id, "low-side-user");
        assert_eq!(import.connector_name, "gapferry");
        let e = load("[stix]\nlayout = \"opencti\"\nopencti_connector_id = \"x\"\n").unwrap_err();
        assert!(e.contains("not a UUID"), "{e}");
        let e = load("[stix]\nlayout = \"taxii\"\n").unwrap_err();
        assert!(e.contains("taxii"), "{e}");
        let e = load("[stix]\nopencti_applicant_id = \"u\"\n").unwrap_err();
        assert!(e.contains("layout = \"opencti\""), "{e}");
    }
}

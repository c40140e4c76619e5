//! Tests of listing, naming, classifying and de-duplicating the objects to send.
use super::*;

#[test]
fn files_and_trees_get_relative_names() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("a.txt"), b"a").unwrap();
    std::fs::write(root.join("sub/b.bin"), b"bb").unwrap();
    let single = dir.path().join("single.json");
    std::fs::write(&single, b"{}").unwrap();
    let files = collect(&[root.clone(), single.clone()], KindMode::Auto).unwrap();
    let names: Vec<_> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["a.txt", "sub/b.bin", "single.json"]);
    assert_eq!(files[1].size, 2);
    assert!(files.iter().all(|f| f.kind == ObjectKind::File));
}

#[test]
fn refuses_missing_and_duplicate_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    assert!(matches!(
        collect(&[missing], KindMode::Auto),
        Err(SourceError::Unreadable { .. })
    ));
    let a = dir.path().join("x");
    std::fs::create_dir(&a).unwrap();
    std::fs::write(a.join("f"), b"1").unwrap();
    std::fs::write(dir.path().join("f"), b"2").unwrap();
    let e = collect(&[a.clone(), dir.path().join("f")], KindMode::Auto).unwrap_err();
    assert!(
        matches!(&e, SourceError::Duplicate { name, .. } if name == "f"),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains(&a.join("f").display().to_string())
            && text.contains(&dir.path().join("f").display().to_string())
            && text.contains("two different files"),
        "{text}"
    );
}

fn names(files: &[SourceFile]) -> Vec<(&str, ObjectKind)> {
    files.iter().map(|f| (f.name.as_str(), f.kind)).collect()
}

#[test]
fn a_file_named_twice_is_one_object() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.json");
    std::fs::write(&a, b"{}").unwrap();
    let files = collect(&[a.clone(), a.clone(), a.clone()], KindMode::Auto).unwrap();
    assert_eq!(names(&files), [("a.json", ObjectKind::File)]);
    // The same file through another path naming it the same: once.
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let dotted = sub.join("../a.json");
    let files = collect(&[a.clone(), dotted], KindMode::Auto).unwrap();
    assert_eq!(names(&files), [("a.json", ObjectKind::File)]);
    // Another name for the same file is asked for explicitly: both names go.
    let link = dir.path().join("link-to-a.json");
    std::os::unix::fs::symlink(&a, &link).unwrap();
    let files = collect(&[a.clone(), link], KindMode::Auto).unwrap();
    assert_eq!(
        names(&files),
        [
            ("a.json", ObjectKind::File),
            ("link-to-a.json", ObjectKind::File)
        ]
    );
    std::fs::write(
        &a,
        br#"{"type":"bundle","id":"bundle--33333333-3333-4333-8333-333333333333","objects":[]}"#,
    )
    .unwrap();
    let files = collect(&[a.clone(), a], KindMode::Force(ObjectKind::Stix)).unwrap();
    assert_eq!(names(&files), [("a.json", ObjectKind::Stix)]);
}

/// An LXD unified image (gzip'd tar with `metadata.yaml`) and its signature.
fn image(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    let img = dir.join(format!("{stem}.tar.gz"));
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&img).unwrap(),
        flate2::Compression::fast(),
    );
    let mut t = tar::Builder::new(gz);
    let meta = b"architecture: x86_64\n";
    let mut h = tar::Header::new_gnu();
    h.set_size(meta.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    t.append_data(&mut h, "metadata.yaml", &meta[..]).unwrap();
    t.into_inner().unwrap().finish().unwrap();
    let sig = dir.join(format!("{stem}.tar.gz.sig"));
    std::fs::write(&sig, b"sig").unwrap();
    (img, sig)
}

#[test]
fn a_signature_named_beside_its_image_travels_once_just_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (img, sig) = image(dir.path(), "MISP_v2.5.1_abc");
    let expected = [
        ("MISP_v2.5.1_abc.tar.gz.sig", ObjectKind::ImageSignature),
        ("MISP_v2.5.1_abc.tar.gz", ObjectKind::Image),
    ];
    for inputs in [
        vec![img.clone(), sig.clone()],
        vec![sig.clone(), img.clone()],
        vec![sig.clone(), img.clone(), sig.clone(), img.clone()],
        vec![dir.path().to_path_buf(), img.clone(), sig.clone()],
    ] {
        let files = collect(&inputs, KindMode::Auto).unwrap();
        assert_eq!(names(&files), expected, "{inputs:?}");
    }
    // Between them, another file: the signature still comes just before its image.
    let other = dir.path().join("notes.txt");
    std::fs::write(&other, b"n").unwrap();
    let files = collect(&[sig.clone(), other, img.clone()], KindMode::Auto).unwrap();
    assert_eq!(
        names(&files),
        [
            ("notes.txt", ObjectKind::File),
            ("MISP_v2.5.1_abc.tar.gz.sig", ObjectKind::ImageSignature),
            ("MISP_v2.5.1_abc.tar.gz", ObjectKind::Image),
        ]
    );
    // Named alone, a signature still goes (its image may follow later).
    let files = collect(&[sig], KindMode::Auto).unwrap();
    assert_eq!(names(&files), [expected[0]]);
}

#[test]
fn a_file_inside_a_named_directory_keeps_the_directory_s_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("a.json"), b"{}").unwrap();
    std::fs::write(root.join("sub/b.bin"), b"b").unwrap();
    let expected = [
        ("a.json", ObjectKind::File),
        ("sub/b.bin", ObjectKind::File),
    ];
    for inputs in [
        vec![root.clone(), root.join("a.json")],
        vec![root.join("a.json"), root.clone()],
        vec![root.join("sub/b.bin"), root.clone()],
        vec![root.join("sub"), root.clone(), root.join("sub/b.bin")],
        vec![root.clone(), root.clone()],
    ] {
        let files = collect(&inputs, KindMode::Auto).unwrap();
        let mut got = names(&files);
        got.sort_by_key(|(n, _)| *n);
        assert_eq!(got, expected, "{inputs:?}");
    }
}

#[test]
fn a_misp_export_named_twice_sends_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let ev = |u: &str, ts: &str| {
        format!(
            r#"{{"Event":{{"uuid":"{u}","info":"x","Orgc":{{"name":"o","uuid":"{u}"}},"timestamp":"{ts}","date":"2024-01-01","analysis":"0","threat_level_id":"1","Attribute":[]}}}}"#
        )
    };
    let u1 = "11111111-1111-4111-8111-111111111111";
    let u2 = "22222222-2222-4222-8222-222222222222";
    let export = dir.path().join("export.json");
    std::fs::write(
        &export,
        format!(r#"{{"response":[{},{}]}}"#, ev(u1, "1"), ev(u2, "1")),
    )
    .unwrap();
    let files = collect(&[export.clone(), export.clone()], KindMode::Auto).unwrap();
    assert_eq!(files.len(), 2);
    // Two different exports with one event each: both copies go, the receiver keeps the newest.
    let newer = dir.path().join("newer.json");
    std::fs::write(&newer, ev(u1, "2")).unwrap();
    let files = collect(&[export, newer], KindMode::Auto).unwrap();
    assert_eq!(
        files
            .iter()
            .filter(|f| f.name == format!("{u1}.json"))
            .count(),
        2
    );
}

#[test]
fn misp_exports_split_into_events_and_stix_is_recognised() {
    let dir = tempfile::tempdir().unwrap();
    let ev = |u: &str| {
        format!(
            r#"{{"Event":{{"uuid":"{u}","info":"x","Orgc":{{"name":"o","uuid":"{u}"}},"timestamp":"1","date":"2024-01-01","analysis":"0","threat_level_id":"1","Attribute":[]}}}}"#
        )
    };
    let u1 = "11111111-1111-4111-8111-111111111111";
    let u2 = "22222222-2222-4222-8222-222222222222";
    let export = format!(r#"{{"response":[{},{}]}}"#, ev(u1), ev(u2));
    std::fs::write(dir.path().join("export.json"), export).unwrap();
    std::fs::write(
        dir.path().join("b.json"),
        r#"{"type":"bundle","id":"bundle--33333333-3333-4333-8333-333333333333","objects":[]}"#,
    )
    .unwrap();
    let files = collect(&[dir.path().to_path_buf()], KindMode::Auto).unwrap();
    let got: Vec<_> = files.iter().map(|f| (f.name.as_str(), f.kind)).collect();
    assert_eq!(
        got,
        [
            ("b.json", ObjectKind::Stix),
            (&*format!("{u1}.json"), ObjectKind::Misp),
            (&*format!("{u2}.json"), ObjectKind::Misp)
        ]
    );
    let mut content = String::new();
    files[1]
        .open()
        .unwrap()
        .read_to_string(&mut content)
        .unwrap();
    assert!(content.contains(u1) && !content.contains(u2));
    let forced = collect(
        &[dir.path().join("b.json")],
        KindMode::Force(ObjectKind::File),
    )
    .unwrap();
    assert_eq!(forced[0].kind, ObjectKind::File);
}

#[test]
fn what_the_high_side_would_refuse_is_refused_before_sending() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    std::fs::write(&report, br#"{"type":"report","id":"x"}"#).unwrap();
    let bad_bundle = dir.path().join("bad-bundle.json");
    std::fs::write(
        &bad_bundle,
        br#"{"type":"bundle","id":"bundle--1","objects":[]}"#,
    )
    .unwrap();
    let no_event = dir.path().join("empty-export.json");
    std::fs::write(&no_event, br#"{"response":[]}"#).unwrap();
    let no_info = dir.path().join("no-info.json");
    std::fs::write(
        &no_info,
        br#"{"Event":{"uuid":"11111111-1111-4111-8111-111111111111","Orgc":{"name":"o"}}}"#,
    )
    .unwrap();
    let not_image = dir.path().join("MISP_v1_abc.tar.gz");
    std::fs::write(&not_image, b"plain bytes").unwrap();
    let (no_metadata, _) = {
        let img = dir.path().join("Other_v1_abc.tar.gz");
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&img).unwrap(),
            flate2::Compression::fast(),
        );
        let mut t = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, "rootfs/etc/hostname", &b"x"[..])
            .unwrap();
        t.into_inner().unwrap().finish().unwrap();
        (img, ())
    };
    let cases: [(&Path, KindMode, &str); 7] = [
        (&report, KindMode::Force(ObjectKind::Stix), "not \"bundle\""),
        (&report, KindMode::Force(ObjectKind::Misp), "no MISP event"),
        (&bad_bundle, KindMode::Auto, "bundle--<uuid>"),
        (&no_event, KindMode::Force(ObjectKind::Misp), "no event"),
        (&no_info, KindMode::Auto, "no `info`"),
        (
            &not_image,
            KindMode::Force(ObjectKind::Image),
            "neither gzip nor xz",
        ),
        (
            &no_metadata,
            KindMode::Force(ObjectKind::Image),
            "metadata.yaml",
        ),
    ];
    for (path, mode, why) in cases {
        let e = collect(&[path.to_path_buf()], mode).unwrap_err();
        let text = e.to_string();
        assert!(e.is_refusal(), "{text}");
        assert!(
            text.contains(&path.display().to_string()) && text.contains("not sent"),
            "{text}"
        );
        assert!(text.contains(why), "{why:?} in {text}");
    }
    // The report is still a plain file when nothing forces a kind.
    let files = collect(&[report], KindMode::Auto).unwrap();
    assert_eq!(names(&files), [("report.json", ObjectKind::File)]);
}

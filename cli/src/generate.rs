//! `tshm header`: C and Python (ctypes) definitions of a segment's stored
//! layout, with checks of every size and offset.

use std::fmt::Write as _;

use typed_shm::Primitive;
use typed_shm::inspect::{Layout, Segment};

/// A struct to emit, under the name it gets in the output.
struct Decl<'a> {
    name: String,
    layout: &'a Layout,
}

/// The structs of `root`, innermost first, each once; structs of the same
/// name but another layout get a numbered name.
fn structs(root: &Layout) -> Vec<Decl<'_>> {
    fn walk<'a>(l: &'a Layout, out: &mut Vec<Decl<'a>>) {
        match l {
            Layout::Primitive { .. } => {}
            Layout::Array { element, .. } => walk(element, out),
            Layout::Struct { name, fields, .. } => {
                for f in fields {
                    walk(&f.layout, out);
                }
                if out.iter().any(|d| d.layout == l) {
                    return;
                }
                let taken = |n: &str| out.iter().any(|d| d.name == n);
                let mut unique = ident(name);
                let mut i = 2;
                while taken(&unique) {
                    unique = format!("{}_{i}", ident(name));
                    i += 1;
                }
                out.push(Decl {
                    name: unique,
                    layout: l,
                });
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out
}

fn name_of<'a>(decls: &'a [Decl<'_>], l: &Layout) -> &'a str {
    decls
        .iter()
        .find(|d| d.layout == l)
        .map_or("?", |d| d.name.as_str())
}

/// `s` as an identifier of C and Python: other characters become `_`, a
/// leading digit (tuple fields) or a keyword gets a `_`.
fn ident(s: &str) -> String {
    const KEYWORDS: &[&str] = &[
        "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else", "enum",
        "extern", "float", "for", "goto", "if", "inline", "int", "long", "register", "restrict", "return",
        "short", "signed", "sizeof", "static", "struct", "switch", "typedef", "union", "unsigned", "void",
        "volatile", "while", "and", "as", "assert", "class", "def", "del", "elif", "except", "finally",
        "from", "global", "import", "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "try",
        "with", "yield", "None", "True", "False", "bool",
    ];
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    if KEYWORDS.contains(&out.as_str()) {
        out.push('_');
    }
    out
}

/// The key as an upper-case identifier, for macro and constant names.
fn key_ident(seg: &Segment) -> String {
    ident(seg.key()).to_ascii_uppercase()
}

/// The top-level struct: the element's, or a wrapper `{ value }` around a
/// primitive or array element, with the same layout.
fn root(seg: &Segment) -> Result<Layout, String> {
    let layout = seg.layout().ok_or_else(|| {
        format!(
            "segment {:?} stores no layout (too large to fit its header page): only its description is known: {}",
            seg.key(),
            seg.description()
        )
    })?;
    Ok(match layout {
        Layout::Struct { .. } => layout.clone(),
        other => Layout::Struct {
            name: format!("{}_value", ident(seg.key())),
            size: other.size(),
            align: other.align(),
            fields: vec![typed_shm::inspect::Field {
                name: "value".into(),
                offset: 0,
                layout: other.clone(),
            }],
        },
    })
}

fn c_primitive(kind: Primitive, size: usize) -> String {
    match kind {
        Primitive::F32 => "float".into(),
        Primitive::F64 => "double".into(),
        Primitive::U128 => "unsigned __int128".into(),
        Primitive::I128 => "__int128".into(),
        k if k.is_signed() => format!("int{}_t", 8 * size),
        _ => format!("uint{}_t", 8 * size),
    }
}

/// A C declaration of `name` with layout `l`: `uint16_t y[2][3]`.
fn c_decl(decls: &[Decl<'_>], l: &Layout, name: &str) -> String {
    let mut dims = String::new();
    let mut t = l;
    while let Layout::Array { element, len, .. } = t {
        let _ = write!(dims, "[{len}]");
        t = element;
    }
    let base = match t {
        Layout::Primitive { kind, size, .. } => c_primitive(*kind, *size),
        s => format!("struct {}", name_of(decls, s)),
    };
    format!("{base} {name}{dims}")
}

/// The largest alignment of the fields (what a C compiler gives a struct
/// without an attribute).
fn natural_align(fields: &[typed_shm::inspect::Field]) -> usize {
    fields.iter().map(|f| f.layout.align()).max().unwrap_or(1)
}

/// A C header for `seg`: its structs, `_Static_assert`s on every size and
/// offset, and the facts a C program needs to map it.
pub fn c(seg: &Segment) -> Result<String, String> {
    let root = root(seg)?;
    let decls = structs(&root);
    let k = key_ident(seg);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "/* The layout of typed-shm segment {:?}, as stored in it (tshm header). */",
        seg.key()
    );
    let _ = writeln!(o, "#ifndef TSHM_{k}_H\n#define TSHM_{k}_H\n");
    o.push_str("#include <stddef.h>\n#include <stdint.h>\n\n");
    let _ = writeln!(
        o,
        "/* The object: shm_open(TSHM_{k}_NATIVE_KEY) or /dev/shm plus the name without its '/'. */"
    );
    let _ = writeln!(o, "#define TSHM_{k}_NATIVE_KEY {:?}", seg.native_key());
    let _ = writeln!(
        o,
        "/* The data starts here (also stored at byte 40 of the header, as a uint64_t). */"
    );
    let _ = writeln!(o, "#define TSHM_{k}_DATA_OFFSET {}", seg.data_offset());
    let _ = writeln!(
        o,
        "/* Elements of struct {} in the data (more than 1: a slice). */",
        name_of(&decls, &root)
    );
    let _ = writeln!(o, "#define TSHM_{k}_LEN {}", seg.len());
    let _ = writeln!(
        o,
        "#define TSHM_{k}_FINGERPRINT 0x{:016x}ULL\n",
        seg.fingerprint()
    );
    for d in &decls {
        let Layout::Struct {
            size, align, fields, ..
        } = d.layout
        else {
            continue;
        };
        let attr = if *align > natural_align(fields) {
            format!(" __attribute__((aligned({align})))")
        } else {
            String::new()
        };
        let _ = writeln!(o, "struct {} {{", d.name);
        for f in fields {
            let _ = writeln!(o, "    {};", c_decl(&decls, &f.layout, &ident(&f.name)));
        }
        let _ = writeln!(o, "}}{attr};");
        let n = &d.name;
        let _ = writeln!(
            o,
            "_Static_assert(sizeof(struct {n}) == {size}, \"size of {n}\");"
        );
        let _ = writeln!(
            o,
            "_Static_assert(_Alignof(struct {n}) == {align}, \"alignment of {n}\");"
        );
        for f in fields {
            let (fname, off) = (ident(&f.name), f.offset);
            let _ = writeln!(
                o,
                "_Static_assert(offsetof(struct {n}, {fname}) == {off}, \"offset of {n}.{fname}\");"
            );
        }
        o.push('\n');
    }
    let _ = writeln!(o, "#endif");
    Ok(o)
}

fn py_type(decls: &[Decl<'_>], l: &Layout) -> String {
    match l {
        Layout::Primitive { kind, size, .. } => match kind {
            Primitive::F32 => "ctypes.c_float".into(),
            Primitive::F64 => "ctypes.c_double".into(),
            // ctypes has no 128-bit integer: two 64-bit words, low first on
            // a little-endian machine.
            Primitive::U128 | Primitive::I128 => "(ctypes.c_uint64 * 2)".into(),
            k if k.is_signed() => format!("ctypes.c_int{}", 8 * size),
            _ => format!("ctypes.c_uint{}", 8 * size),
        },
        Layout::Array { element, len, .. } => format!("({} * {len})", py_type(decls, element)),
        s => name_of(decls, s).to_owned(),
    }
}

/// A Python module for `seg`: `ctypes.Structure` classes, with asserts on
/// every size and offset when it is imported.
pub fn python(seg: &Segment) -> Result<String, String> {
    let root = root(seg)?;
    let decls = structs(&root);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\"\"\"The layout of typed-shm segment {:?}, as stored in it (tshm header).\"\"\"\n",
        seg.key()
    );
    o.push_str("import ctypes\n\n");
    let _ = writeln!(o, "KEY = {:?}", seg.key());
    let _ = writeln!(o, "# The object: /dev/shm plus the name without its '/'.");
    let _ = writeln!(o, "NATIVE_KEY = {:?}", seg.native_key());
    let _ = writeln!(
        o,
        "# The data starts here (also stored at byte 40 of the header)."
    );
    let _ = writeln!(o, "DATA_OFFSET = {}", seg.data_offset());
    let _ = writeln!(
        o,
        "# Elements of {} in the data (more than 1: a slice).",
        name_of(&decls, &root)
    );
    let _ = writeln!(o, "LEN = {}", seg.len());
    let _ = writeln!(o, "FINGERPRINT = 0x{:016x}", seg.fingerprint());
    o.push('\n');
    for d in &decls {
        let Layout::Struct { size, fields, .. } = d.layout else {
            continue;
        };
        let n = &d.name;
        let _ = writeln!(o, "\nclass {n}(ctypes.Structure):");
        let _ = writeln!(o, "    _fields_ = [");
        for f in fields {
            let _ = writeln!(
                o,
                "        ({:?}, {}),",
                ident(&f.name),
                py_type(&decls, &f.layout)
            );
        }
        let _ = writeln!(o, "    ]\n");
        let _ = writeln!(o, "assert ctypes.sizeof({n}) == {size}, \"size of {n}\"");
        for f in fields {
            let (fname, off) = (ident(&f.name), f.offset);
            let _ = writeln!(o, "assert {n}.{fname}.offset == {off}, \"offset of {n}.{fname}\"");
        }
    }
    let _ = writeln!(o, "\nROOT = {}", name_of(&decls, &root));
    Ok(o)
}

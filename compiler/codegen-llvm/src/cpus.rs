//! The CPU names LLVM 22 knows for each architecture dlc targets (`llc-22 -mtriple=T
//! -mcpu=help`), checked before LLVM sees a `--cpu`: LLVM itself only warns about an
//! unknown name and then aborts the process ("64-bit code requested on a subtarget that
//! doesn't support it"). `tests` compares the lists with the installed llc-22 when
//! there is one, so they follow LLVM upgrades.

/// `x86_64`.
pub const X86_CPUS: &[&str] = &[
    "alderlake",
    "amdfam10",
    "arrowlake",
    "arrowlake-s",
    "arrowlake_s",
    "athlon",
    "athlon-4",
    "athlon-fx",
    "athlon-mp",
    "athlon-tbird",
    "athlon-xp",
    "athlon64",
    "athlon64-sse3",
    "atom",
    "atom_sse4_2",
    "atom_sse4_2_movbe",
    "barcelona",
    "bdver1",
    "bdver2",
    "bdver3",
    "bdver4",
    "bonnell",
    "broadwell",
    "btver1",
    "btver2",
    "c3",
    "c3-2",
    "cannonlake",
    "cascadelake",
    "clearwaterforest",
    "cooperlake",
    "core-avx-i",
    "core-avx2",
    "core2",
    "core_2_duo_sse4_1",
    "core_2_duo_ssse3",
    "core_2nd_gen_avx",
    "core_3rd_gen_avx",
    "core_4th_gen_avx",
    "core_4th_gen_avx_tsx",
    "core_5th_gen_avx",
    "core_5th_gen_avx_tsx",
    "core_aes_pclmulqdq",
    "core_i7_sse4_2",
    "corei7",
    "corei7-avx",
    "diamondrapids",
    "emeraldrapids",
    "generic",
    "geode",
    "goldmont",
    "goldmont-plus",
    "goldmont_plus",
    "gracemont",
    "grandridge",
    "graniterapids",
    "graniterapids-d",
    "graniterapids_d",
    "haswell",
    "i386",
    "i486",
    "i586",
    "i686",
    "icelake-client",
    "icelake-server",
    "icelake_client",
    "icelake_server",
    "ivybridge",
    "k6",
    "k6-2",
    "k6-3",
    "k8",
    "k8-sse3",
    "knl",
    "knm",
    "lakemont",
    "lunarlake",
    "meteorlake",
    "mic_avx512",
    "nehalem",
    "nocona",
    "novalake",
    "opteron",
    "opteron-sse3",
    "pantherlake",
    "penryn",
    "pentium",
    "pentium-m",
    "pentium-mmx",
    "pentium2",
    "pentium3",
    "pentium3m",
    "pentium4",
    "pentium4m",
    "pentium_4",
    "pentium_4_sse3",
    "pentium_ii",
    "pentium_iii",
    "pentium_iii_no_xmm_regs",
    "pentium_m",
    "pentium_mmx",
    "pentium_pro",
    "pentiumpro",
    "prescott",
    "raptorlake",
    "rocketlake",
    "sandybridge",
    "sapphirerapids",
    "sierraforest",
    "silvermont",
    "skx",
    "skylake",
    "skylake-avx512",
    "skylake_avx512",
    "slm",
    "tigerlake",
    "tremont",
    "westmere",
    "wildcatlake",
    "winchip-c6",
    "winchip2",
    "x86-64",
    "x86-64-v2",
    "x86-64-v3",
    "x86-64-v4",
    "yonah",
    "znver1",
    "znver2",
    "znver3",
    "znver4",
    "znver5",
];

/// `aarch64`.
pub const AARCH64_CPUS: &[&str] = &[
    "a64fx",
    "ampere1",
    "ampere1a",
    "ampere1b",
    "ampere1c",
    "apple-a10",
    "apple-a11",
    "apple-a12",
    "apple-a13",
    "apple-a14",
    "apple-a15",
    "apple-a16",
    "apple-a17",
    "apple-a18",
    "apple-a19",
    "apple-a7",
    "apple-a8",
    "apple-a9",
    "apple-m1",
    "apple-m2",
    "apple-m3",
    "apple-m4",
    "apple-m5",
    "apple-s10",
    "apple-s4",
    "apple-s5",
    "apple-s6",
    "apple-s7",
    "apple-s8",
    "apple-s9",
    "c1-nano",
    "c1-premium",
    "c1-pro",
    "c1-ultra",
    "carmel",
    "cobalt-100",
    "cortex-a320",
    "cortex-a34",
    "cortex-a35",
    "cortex-a510",
    "cortex-a520",
    "cortex-a520ae",
    "cortex-a53",
    "cortex-a55",
    "cortex-a57",
    "cortex-a65",
    "cortex-a65ae",
    "cortex-a710",
    "cortex-a715",
    "cortex-a72",
    "cortex-a720",
    "cortex-a720ae",
    "cortex-a725",
    "cortex-a73",
    "cortex-a75",
    "cortex-a76",
    "cortex-a76ae",
    "cortex-a77",
    "cortex-a78",
    "cortex-a78ae",
    "cortex-a78c",
    "cortex-r82",
    "cortex-r82ae",
    "cortex-x1",
    "cortex-x1c",
    "cortex-x2",
    "cortex-x3",
    "cortex-x4",
    "cortex-x925",
    "cyclone",
    "exynos-m3",
    "exynos-m4",
    "exynos-m5",
    "falkor",
    "fujitsu-monaka",
    "gb10",
    "generic",
    "grace",
    "kryo",
    "neoverse-512tvb",
    "neoverse-e1",
    "neoverse-n1",
    "neoverse-n2",
    "neoverse-n3",
    "neoverse-v1",
    "neoverse-v2",
    "neoverse-v3",
    "neoverse-v3ae",
    "olympus",
    "oryon-1",
    "saphira",
    "thunderx",
    "thunderx2t99",
    "thunderx3t110",
    "thunderxt81",
    "thunderxt83",
    "thunderxt88",
    "tsv110",
];

/// `nvptx64`.
pub const NVPTX_CPUS: &[&str] = &[
    "sm_100", "sm_100a", "sm_100f", "sm_101", "sm_101a", "sm_101f", "sm_103", "sm_103a", "sm_103f", "sm_110",
    "sm_110a", "sm_110f", "sm_120", "sm_120a", "sm_120f", "sm_121", "sm_121a", "sm_121f", "sm_20", "sm_21", "sm_30",
    "sm_32", "sm_35", "sm_37", "sm_50", "sm_52", "sm_53", "sm_60", "sm_61", "sm_62", "sm_70", "sm_72", "sm_75",
    "sm_80", "sm_86", "sm_87", "sm_88", "sm_89", "sm_90", "sm_90a",
];

/// The oldest GPU architecture dlc's CUDA kernels are built and tested for.
pub const MIN_SM: u32 = 70;

/// Checks a `--cpu` for `triple` before LLVM sees it: an error naming the flag, with
/// close names LLVM does know, for one it does not (or for a GPU older than
/// [`MIN_SM`]). Architectures without a list here pass unchecked.
pub fn check(triple: &str, cpu: &str) -> Result<(), String> {
    let arch = triple.split('-').next().unwrap_or("");
    let list = match arch {
        "x86_64" => X86_CPUS,
        "aarch64" | "arm64" => AARCH64_CPUS,
        "nvptx64" => NVPTX_CPUS,
        _ => return Ok(()),
    };
    if arch == "nvptx64" {
        let sm = cpu.strip_prefix("sm_").map(|s| s.trim_end_matches(['a', 'f'])).and_then(|s| s.parse::<u32>().ok());
        return match sm {
            Some(n) if list.contains(&cpu) && n >= MIN_SM => Ok(()),
            Some(n) if list.contains(&cpu) => {
                Err(format!("--cpu {cpu}: dlc's CUDA kernels need sm_{MIN_SM} (Volta) or newer, this is sm_{n}"))
            }
            _ => Err(format!(
                "--cpu '{cpu}' is not a GPU architecture LLVM knows for {triple}; use sm_70 .. sm_121 (e.g. sm_80, sm_90)"
            )),
        };
    }
    if cpu == "native" || list.contains(&cpu) {
        return Ok(());
    }
    // Suggest the names that share the longest prefix with the one given.
    let common = |a: &str| a.chars().zip(cpu.chars()).take_while(|(x, y)| x == y).count();
    let best = list.iter().map(|c| common(c)).max().unwrap_or(0);
    let mut near: Vec<&str> =
        if best >= 2 { list.iter().copied().filter(|c| common(c) == best).collect() } else { vec![] };
    near.truncate(6);
    let hint = if near.is_empty() {
        format!("e.g. {}", if arch == "x86_64" { "x86-64-v3, znver4, native" } else { "generic, neoverse-v1, native" })
    } else {
        format!("did you mean {}?", near.join(", "))
    };
    Err(format!("--cpu '{cpu}' is not a CPU LLVM knows for {triple} ({hint})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lists are llc-22's own (skipped where llc-22 is not installed).
    #[test]
    fn lists_match_the_installed_llvm() {
        for (triple, list) in [("x86_64", X86_CPUS), ("aarch64", AARCH64_CPUS), ("nvptx64", NVPTX_CPUS)] {
            let Ok(out) =
                std::process::Command::new("llc-22").args([&format!("-mtriple={triple}"), "-mcpu=help"]).output()
            else {
                return;
            };
            let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
            let have: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("- Select the"))
                .filter_map(|l| l.split_whitespace().next())
                .collect();
            assert_eq!(have, list, "{triple}: regenerate compiler/codegen-llvm/src/cpus.rs from llc-22");
        }
    }

    #[test]
    fn unknown_cpus_are_errors_naming_the_flag() {
        assert!(check("x86_64-pc-linux-gnu", "znver4").is_ok());
        assert!(check("x86_64-pc-linux-gnu", "native").is_ok());
        let e = check("x86_64-pc-linux-gnu", "pentium99").unwrap_err();
        assert!(
            e.starts_with("--cpu 'pentium99' is not a CPU LLVM knows") && e.contains("did you mean pentium"),
            "{e}"
        );
        assert!(check("nvptx64-nvidia-cuda", "sm_90a").is_ok());
        assert!(check("nvptx64-nvidia-cuda", "sm_1").unwrap_err().contains("not a GPU architecture"));
        assert!(check("nvptx64-nvidia-cuda", "sm_60").unwrap_err().contains("need sm_70"));
        assert!(check("riscv64-unknown-linux-gnu", "anything").is_ok());
    }
}

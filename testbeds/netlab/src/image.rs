//! What each image in `testbeds/images/Dockerfile` holds, as the host provides it: every image is
//! Debian 12 plus packages, and the host (Debian 12, as CI is) has the same packages installed, so
//! a node runs the host's binaries with a private `/run` instead of a container root. Keep this
//! table in step with the Dockerfile.

/// A Dockerfile stage.
#[derive(Debug)]
pub struct Image {
    pub name: &'static str,
    /// A program the image's package installs, and the package (for the error when it is missing).
    pub needs: Option<(&'static str, &'static str)>,
    /// Directories the image creates under `/run` (a node's `/run` starts empty).
    pub run_dirs: &'static [&'static str],
    /// The image's `CMD`, when the node gives no `cmd`.
    pub default_cmd: &'static str,
}

const IMAGES: &[Image] = &[
    Image {
        name: "foureyes-lab-listener",
        needs: None,
        run_dirs: &[],
        default_cmd: "sleep infinity",
    },
    Image {
        name: "foureyes-lab-frr",
        needs: Some(("/usr/lib/frr/frrinit.sh", "frr")),
        run_dirs: &[],
        default_cmd: "sleep infinity",
    },
    Image {
        name: "foureyes-lab-gobgp",
        needs: Some(("gobgpd", "gobgpd")),
        run_dirs: &[],
        default_cmd: "sleep infinity",
    },
    Image {
        name: "foureyes-lab-bird",
        needs: Some(("bird", "bird2")),
        run_dirs: &["/run/bird"],
        default_cmd: "sleep infinity",
    },
];

impl Image {
    pub fn find(name: &str) -> Result<&'static Image, String> {
        IMAGES.iter().find(|i| i.name == name).ok_or_else(|| {
            let known: Vec<_> = IMAGES.iter().map(|i| i.name).collect();
            format!(
                "image {name:?} is not one netlab knows ({}); add it to testbeds/netlab/src/image.rs",
                known.join(", ")
            )
        })
    }

    /// Whether the host has what the image would hold.
    pub fn check_host(&self) -> Result<(), String> {
        let Some((prog, pkg)) = self.needs else {
            return Ok(());
        };
        let found = if prog.starts_with('/') {
            std::path::Path::new(prog).exists()
        } else {
            std::env::var_os("PATH").is_some_and(|p| {
                std::env::split_paths(&p).any(|d| d.join(prog).is_file())
                    || ["/usr/sbin", "/sbin", "/usr/bin"]
                        .iter()
                        .any(|d| std::path::Path::new(d).join(prog).is_file())
            })
        };
        if found {
            Ok(())
        } else {
            Err(format!(
                "image {} needs {prog} on the host: apt-get install -y {pkg}",
                self.name
            ))
        }
    }
}

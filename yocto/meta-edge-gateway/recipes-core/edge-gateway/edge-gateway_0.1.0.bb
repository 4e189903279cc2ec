SUMMARY = "Edge gateway for factory-floor IoT"
DESCRIPTION = "Embedded MQTT broker ingest, a durable redb buffer and the Socket.IO \
               dashboard API of the central IoT Monitoring System, in one binary run by systemd."
HOMEPAGE = "https://github.com/edge-gateway/edge-gateway"
BUGTRACKER = "https://github.com/edge-gateway/edge-gateway/issues"
SECTION = "net"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://LICENSE;md5=547fb17456910306c839b75045af5ae8"

PV .= "+git"

# Point EDGE_GATEWAY_GIT at your mirror or fork in local.conf if needed.
EDGE_GATEWAY_GIT ?= "git://github.com/edge-gateway/edge-gateway.git;protocol=https;branch=main"
SRC_URI = "${EDGE_GATEWAY_GIT} \
           file://10-yocto-user.conf \
"
# Pin a commit for reproducible images; AUTOREV follows the branch.
SRCREV = "${AUTOREV}"

S = "${UNPACKDIR}/${BP}"

inherit cargo cargo-update-recipe-crates systemd useradd

CVE_PRODUCT = "edge-gateway"

require ${BPN}-crates.inc

# The binary is the only cargo target we ship.
CARGO_BUILD_FLAGS += "--bin edge-gateway"

USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system edge-gateway"
USERADD_PARAM:${PN} = "--system --home-dir ${localstatedir}/lib/edge-gateway --no-create-home \
                       --shell /sbin/nologin --gid edge-gateway --groups dialout edge-gateway"

SYSTEMD_SERVICE:${PN} = "edge-gateway.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}/edge-gateway.service.d
    install -m 0644 ${S}/systemd/edge-gateway.service ${D}${systemd_system_unitdir}/edge-gateway.service
    install -m 0644 ${UNPACKDIR}/10-yocto-user.conf ${D}${systemd_system_unitdir}/edge-gateway.service.d/10-yocto-user.conf
    install -d ${D}${sysconfdir}/edge-gateway
    install -m 0644 ${S}/src/default-config.toml ${D}${sysconfdir}/edge-gateway/edge-gateway.toml
}

FILES:${PN} += "${systemd_system_unitdir}/edge-gateway.service.d"
CONFFILES:${PN} = "${sysconfdir}/edge-gateway/edge-gateway.toml"
RDEPENDS:${PN} = "systemd"

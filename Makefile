# computed: two commands do everything on a fresh machine.
#   make demo   bring up a 3-host dev cluster and show it working (make down stops it)
#   make test   run the whole test suite
# Both start with `make install`, which is quick when nothing changed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .stamps
APT_PACKAGES := gcc make libc6-dev linux-libc-dev libffi-dev libseccomp-dev iproute2 iputils-ping procps etcd-server systemd
EXT_SUFFIX := $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
KVM_EXT := computed/vmm/_kvm$(EXT_SUFFIX)
HOST_EXT := computed/_host$(EXT_SUFFIX)
CONFINE_EXT := computed/vmm/_confine$(EXT_SUFFIX)
DETACH_EXT := computed/vmm/_detach$(EXT_SUFFIX)
SECCOMP_FILTERS := computed/vmm/seccomp/main.bpf
GUEST_HEADER := computed/guests/sdk/include/computed_guest.h

# compat editable mode: a plain path entry, not an import hook that costs
# ~10 ms at every interpreter start.
.PHONY: bytecode install proto test test-fast demo down bench lint clean

install: $(STAMPS)/apt $(STAMPS)/venv $(KVM_EXT) $(HOST_EXT) $(CONFINE_EXT) $(DETACH_EXT) $(SECCOMP_FILTERS) guests /dev/net/tun bytecode

# Every VMM start pays its imports; precompiled bytecode keeps that off the
# launch path even where PYTHONDONTWRITEBYTECODE is set. Incremental.
bytecode: $(STAMPS)/venv
	@$(PY) -m compileall -q computed agent scheduler

$(STAMPS)/apt: Makefile
	@mkdir -p $(STAMPS)
	@if dpkg-query -W -f='$${Status}\n' $(APT_PACKAGES) 2>/dev/null | grep -vq 'install ok installed' \
	    || [ $$(dpkg-query -W -f='$${Status}\n' $(APT_PACKAGES) 2>/dev/null | wc -l) -ne $(words $(APT_PACKAGES)) ]; then \
	  echo "installing Debian packages: $(APT_PACKAGES)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi
	@touch $@

$(STAMPS)/venv: pyproject.toml $(STAMPS)/apt
	@mkdir -p $(STAMPS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]' --config-settings editable_mode=compat
	@touch $@

$(KVM_EXT): computed/vmm/kvm_build.py $(GUEST_HEADER) $(STAMPS)/venv
	$(PY) -m computed.vmm.kvm_build

$(HOST_EXT): computed/host_build.py $(STAMPS)/venv
	$(PY) -m computed.host_build

$(CONFINE_EXT): computed/vmm/confine_build.py $(STAMPS)/venv
	$(PY) -m computed.vmm.confine_build

$(DETACH_EXT): computed/vmm/detach_build.py $(STAMPS)/venv
	$(PY) -m computed.vmm.detach_build

# The VMM's seccomp filters, compiled once here (never at a VM's launch) from the policy.
$(SECCOMP_FILTERS): computed/seccomp_policy.toml computed/seccomp_build.py $(KVM_EXT)
	$(PY) -m computed.seccomp_build

guests: $(STAMPS)/apt $(STAMPS)/venv
	@$(MAKE) -s -C computed/guests GUEST_SDK_CC="$(abspath $(PY)) -m computed.guests.sdk"

/dev/net/tun:
	mkdir -p /dev/net && mknod /dev/net/tun c 10 200 && chmod 0666 /dev/net/tun

proto: $(STAMPS)/venv
	$(PY) -m computed.api.regen

test: install
	$(VENV)/bin/pytest -q

test-fast: install
	$(VENV)/bin/pytest -q -m 'not integration and not multinode'

demo: install
	@deploy/demo.sh

down:
	@deploy/devcluster down

bench: install
	@$(PY) bench/run_all.py

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(STAMPS) build computed/vmm/_kvm.* computed/vmm/_kvm*.so computed/_host.* computed/vmm/_confine.* computed/vmm/_detach.* computed/_seccomp.* computed/vmm/seccomp
	-$(MAKE) -s -C computed/guests clean

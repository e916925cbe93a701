{#- salt-sidecar: install the sidecar, write its config from pillar, start it, and only then,
    once `salt-sidecar status` says a master is up, point the minion at it and restart the
    minion. Settings: defaults.yaml, pillar `salt_sidecar` (../pillar.example); docs/install.md.

    Order:  installed -> config -> running -> [master-up gate] -> minion-master -> minion-restart
    The gate is a `prereq` of the minion drop-in: it runs only when the drop-in is about to
    change, and if no master comes up within gate_timeout the drop-in is not written, the
    minion is not restarted and keeps its own masters (the run reports the gate's failure). #}
{%- from "salt-sidecar/map.jinja" import sidecar with context %}
{%- set installed = 'pkg' if sidecar.install == 'package' else 'file' %}

{%- if sidecar.install == 'package' %}

salt-sidecar-installed:
  pkg.installed:
    - name: salt-sidecar
  {%- if sidecar.package_source %}
    - sources:
      - salt-sidecar: {{ sidecar.package_source | yaml_encode }}
  {%- endif %}

{%- else %}

salt-sidecar-installed:
  file.managed:
    - name: {{ sidecar.binary | yaml_encode }}
    - source: {{ sidecar.binary_source | yaml_encode }}
    - mode: '0755'
    - makedirs: True

  {%- if sidecar.manage_services %}
{#- The repository's unit, with ExecStart pointed at the binary this state installs. #}
{%-   set unit = salt['cp.get_file_str'](sidecar.unit_source) %}
{%-   if not unit %}{{ raise('salt_sidecar:unit_source ' ~ sidecar.unit_source ~ ' cannot be read') }}{% endif %}

salt-sidecar-unit:
  file.managed:
    - name: {{ sidecar.unit | yaml_encode }}
    - contents: {{ unit | replace('/usr/local/bin/salt-sidecar', sidecar.binary) | json }}
    - mode: '0644'

{#- The socket unit the service requires: systemd holds the minion listeners. #}
salt-sidecar-socket-unit:
  file.managed:
    - name: {{ sidecar.socket_unit | yaml_encode }}
    - source: {{ sidecar.socket_unit_source | yaml_encode }}
    - mode: '0644'
  {%- endif %}

{%- endif %}

salt-sidecar-config:
  file.managed:
    - name: {{ sidecar.config | yaml_encode }}
    - source: salt://salt-sidecar/files/config.yaml.jinja
    - template: jinja
    - mode: '0644'            # the unit's DynamicUser must read it
    - makedirs: True
    # A config the sidecar would refuse is never written (the running one stays).
    - check_cmd: {{ (sidecar.binary ~ ' check-config --config') | yaml_encode }}
    - require:
      - {{ installed }}: salt-sidecar-installed

{%- if sidecar.manage_services %}

{#- systemd holds the minion listeners and hands them to every start of the service:
    a restart (here, by hand, by the watchdog) or an upgrade refuses no connection.
    Never restarted by this state: that would close the listeners. #}
salt-sidecar-socket:
  service.running:
    - name: salt-sidecar.socket
    - enable: True
  {%- if sidecar.install == 'binary' %}
    - require:
      - file: salt-sidecar-socket-unit
  {%- else %}
    - require:
      - pkg: salt-sidecar-installed
  {%- endif %}

salt-sidecar-running:
  service.running:
    - name: salt-sidecar
    - enable: True
    - require:
      - file: salt-sidecar-config
      - service: salt-sidecar-socket
    - watch:                  # a new binary or unit: restart, through the socket (no connect refused)
      - {{ installed }}: salt-sidecar-installed
  {%- if sidecar.install == 'binary' %}
      - file: salt-sidecar-unit
  {%- endif %}

salt-sidecar-reloaded:        # a new config: `salt-sidecar reload` (ExecReload=), which keeps
  cmd.run:                    # the minion's sessions and fails if the sidecar refuses the file
    - name: systemctl reload salt-sidecar
    - onchanges:
      - file: salt-sidecar-config
    - require:
      - service: salt-sidecar-running

{%- else %}

salt-sidecar-running:         # no systemd: start_cmd, unless a sidecar already answers
  cmd.run:
    - name: {{ sidecar.start_cmd | yaml_encode }}
    - bg: True
    - unless: {{ sidecar.status_cmd | yaml_encode }}
    - require:
      - file: salt-sidecar-config

{%- endif %}
{%- set running = 'service' if sidecar.manage_services else 'cmd' %}

{#- `ready` in /status: a master is selected and up (both its ports). #}
salt-sidecar-master-up:
  cmd.run:
    - name: |
        i=0
        while [ "$i" -lt {{ sidecar.gate_timeout | int }} ]; do
          if {{ sidecar.status_cmd }} 2>/dev/null | grep -Eq '"ready" *: *true'; then
            echo "salt-sidecar has a healthy master"; exit 0
          fi
          i=$((i + 1)); sleep 1
        done
        echo "salt-sidecar: no master up after {{ sidecar.gate_timeout | int }} s ({{ sidecar.status_cmd }}); the minion keeps its masters" >&2
        exit 1
    - prereq:
      - file: salt-sidecar-minion-master
    - require:
      - {{ running }}: salt-sidecar-running

salt-sidecar-minion-master:
  file.managed:
    - name: {{ sidecar.minion_dropin | yaml_encode }}
    - mode: '0644'
    - makedirs: True
    - contents: |
        # Managed by Salt (state salt-sidecar): this minion talks to its local salt-sidecar,
        # which does the failover between the masters. Delete this file and restart the
        # minion to go back to the masters in the main minion config.
        master: {{ sidecar.minion_master }}
        master_type: str
        # The sidecar's interval: the minion's own alive check fires Salt's
        # __master_disconnected and start events through the sidecar.
        master_alive_interval: {{ sidecar.alive_interval | int }}
    - require:
      - {{ running }}: salt-sidecar-running

salt-sidecar-minion-restart:
  cmd.run:
    - name: {{ sidecar.minion_restart_cmd | yaml_encode }}
    - bg: {{ sidecar.minion_restart_bg | to_bool }}
    - onchanges:
      - file: salt-sidecar-minion-master

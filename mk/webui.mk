# The web UI's browser tests drive a real headless Chromium through Playwright. They use Debian's
# chromium package (Playwright's own browser download does not work offline), installed here when
# /usr/bin/chromium is missing, with a CJK font so the Chinese labels render in screenshots.
CHROMIUM ?= /usr/bin/chromium

.PHONY: webui-browser
webui-browser:
	@test -x $(CHROMIUM) || { \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium fonts-wqy-microhei; \
	} || echo "mk/webui.mk: could not install chromium; the browser tests will skip"

EXTRA_TEST_DEPS += webui-browser

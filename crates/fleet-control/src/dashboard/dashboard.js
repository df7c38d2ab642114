// The mcpfleet dashboard's live updates and buttons. Hand-written, no build step, no
// dependencies; the page works (without updates or buttons) when it does not run.
//
// Updates: an EventSource on /v1/events/stream; each event (bursts coalesced) re-fetches
// the server-rendered /fragments/fleet into #fleet. A canary's analysis changes without an
// event, so while one runs, and whenever the event stream is unavailable (an admin
// listener that does not serve it answers 404), /v1/status is polled every 2 s and the
// fragment re-fetched when it changed.
//
// Buttons: POST to the admin API with `Authorization: Bearer <#token>`; the outcome (or the
// refusal, with its status and error text) goes to #action-result.
'use strict';

(function () {
  const POLL_MS = 2000;
  const TOKEN_KEY = 'mcpfleet.adminToken';

  const fleet = document.getElementById('fleet');
  const live = document.getElementById('live');
  const result = document.getElementById('action-result');
  const token = document.getElementById('token');
  const tokenForm = document.getElementById('token-form');
  if (!fleet || !live || !result || !token) {
    return;
  }

  function setLive(state, text) {
    if (live.dataset.state !== state) {
      live.dataset.state = state;
      live.textContent = text;
    }
  }

  // --- The admin token: in this tab's sessionStorage only, never in a cookie or URL.
  try {
    token.value = sessionStorage.getItem(TOKEN_KEY) || '';
  } catch (e) {
    // Storage disabled: the token lives in the input only.
  }
  token.addEventListener('input', function () {
    try {
      if (token.value) {
        sessionStorage.setItem(TOKEN_KEY, token.value);
      } else {
        sessionStorage.removeItem(TOKEN_KEY);
      }
    } catch (e) {
      // As above.
    }
  });
  if (tokenForm) {
    tokenForm.addEventListener('submit', function (event) {
      event.preventDefault();
    });
  }

  // --- Re-rendering #fleet from the server's fragment.
  let fetching = false;
  let again = false;

  async function refresh() {
    if (fetching) {
      again = true;
      return;
    }
    fetching = true;
    try {
      const response = await fetch('/fragments/fleet', { cache: 'no-store' });
      if (response.ok) {
        swap(await response.text());
      }
    } catch (e) {
      // The next event or poll tries again.
    } finally {
      fetching = false;
      if (again) {
        again = false;
        refresh();
      }
    }
  }

  // Replaces #fleet's content, keeping keyboard focus on the same control and each list's
  // scroll position (a re-render must not throw a keyboard user back to the top).
  function swap(html) {
    const focus = selectorOf(document.activeElement);
    const scrolled = [];
    fleet.querySelectorAll('section[id] .scroll').forEach(function (region) {
      scrolled.push(['#' + CSS.escape(region.closest('section[id]').id) + ' .scroll', region.scrollTop]);
    });
    fleet.innerHTML = html;
    scrolled.forEach(function (entry) {
      const region = fleet.querySelector(entry[0]);
      if (region) {
        region.scrollTop = entry[1];
      }
    });
    const same = focus && fleet.querySelector(focus);
    if (same) {
      same.focus();
    }
  }

  // A selector that finds `element` again in a re-rendered #fleet, if it is one of its
  // focusable controls.
  function selectorOf(element) {
    if (!element || !fleet.contains(element)) {
      return null;
    }
    if (element.dataset.action && element.dataset.server !== undefined) {
      return 'button[data-action="' + CSS.escape(element.dataset.action) +
        '"][data-server="' + CSS.escape(element.dataset.server) + '"]';
    }
    const section = element.closest('section[id]');
    if (element.classList.contains('scroll') && section) {
      return '#' + CSS.escape(section.id) + ' .scroll';
    }
    return element.id ? '#' + CSS.escape(element.id) : null;
  }

  // --- Events: server-sent, resumed after the newest event the page was rendered with.
  let streaming = false;

  function listen() {
    if (!window.EventSource) {
      return;
    }
    const after = fleet.dataset.lastEventId || '0';
    const source = new EventSource('/v1/events/stream?after=' + encodeURIComponent(after));
    source.onopen = function () {
      streaming = true;
      setLive('live', 'live');
      refresh();
    };
    source.onmessage = function () {
      refresh();
    };
    source.onerror = function () {
      streaming = false;
      if (source.readyState === EventSource.CLOSED) {
        // Refused (404, 401…) rather than dropped: polling only from now on.
        source.close();
      }
      setLive('polling', 'polling every 2 s');
    };
  }

  // --- Polling: /v1/status every 2 s while there is no event stream or a canary runs.
  let lastStatus = null;

  async function poll() {
    if (!streaming || fleet.querySelector('.canary')) {
      try {
        const response = await fetch('/v1/status', { cache: 'no-store' });
        if (!response.ok) {
          throw new Error(response.status + ' ' + response.statusText);
        }
        const text = await response.text();
        if (!streaming) {
          setLive('polling', 'polling every 2 s');
        }
        // The first answer re-renders too: the page may have changed since it was served.
        if (text !== lastStatus) {
          refresh();
        }
        lastStatus = text;
      } catch (e) {
        if (!streaming) {
          setLive('offline', 'not answering');
        }
      }
    }
    setTimeout(poll, POLL_MS);
  }

  // --- Buttons.
  const PAST = {
    promote: 'promoted',
    pause: 'paused',
    resume: 'resumed',
    abort: 'aborted',
    rollback: 'rolled back',
  };

  function show(outcome, status, text) {
    result.dataset.outcome = outcome;
    if (status) {
      result.dataset.status = String(status);
    } else {
      delete result.dataset.status;
    }
    result.textContent = text;
  }

  // The error text of a refusal: the API's {"error": "…"}, else the body, else what the
  // status means here.
  function refusal(status, body) {
    try {
      const parsed = JSON.parse(body);
      if (parsed && typeof parsed.error === 'string') {
        return parsed.error;
      }
    } catch (e) {
      // Not JSON.
    }
    const text = body.trim();
    if (text) {
      return text.slice(0, 500);
    }
    if (status === 401 || status === 403) {
      return 'an admin token is required (type it into "Admin token")';
    }
    if (status === 404 || status === 405) {
      return 'this admin listener does not take actions';
    }
    return 'no reason given';
  }

  // A rollback answers with the deployment's events, one JSON object per line: it went
  // well if the last one did not fail.
  function rollbackOutcome(body) {
    const lines = body.trim().split('\n').filter(Boolean);
    try {
      const last = JSON.parse(lines[lines.length - 1]);
      return { ok: last.kind !== 'deployment_failed', text: last.message || last.kind };
    } catch (e) {
      return { ok: true, text: 'done' };
    }
  }

  async function act(button) {
    const action = button.dataset.action;
    const server = button.dataset.server;
    const what = action + ' ' + server;
    const headers = { 'Content-Type': 'application/json' };
    const secret = token.value.trim();
    if (secret) {
      headers.Authorization = 'Bearer ' + secret;
    }
    let url = '/v1/servers/' + encodeURIComponent(server) + '/' + encodeURIComponent(action);
    let body = '';
    if (action === 'rollback') {
      url = '/v1/rollback';
      body = JSON.stringify({ server: server, author: 'dashboard' });
    }
    show('pending', null, what + ': sent…');
    button.setAttribute('aria-busy', 'true');
    try {
      const response = await fetch(url, { method: 'POST', headers: headers, body: body, cache: 'no-store' });
      const text = await response.text();
      if (!response.ok) {
        show('error', response.status, what + ' refused (' + response.status + ' ' +
          response.statusText + '): ' + refusal(response.status, text));
      } else if (action === 'rollback') {
        const outcome = rollbackOutcome(text);
        show(outcome.ok ? 'ok' : 'error', response.status, what + ': ' + outcome.text);
      } else {
        show('ok', response.status, server + ': ' + PAST[action]);
      }
    } catch (e) {
      show('error', null, what + ' failed: ' + e.message);
    } finally {
      button.removeAttribute('aria-busy');
      refresh();
    }
  }

  document.addEventListener('click', function (event) {
    const button = event.target.closest('button[data-action]');
    if (button && fleet.contains(button) && button.getAttribute('aria-busy') !== 'true') {
      act(button);
    }
  });

  setLive('connecting', 'connecting…');
  listen();
  setTimeout(poll, POLL_MS);
})();

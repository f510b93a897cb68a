// The two small scripts report.html runs besides the chart library, as source text (the page is
// plain ES5-level browser code; the server only inlines it).

/**
 * Runs first: every error, failed load, blocked request and console error or warning lands in
 * `<pre id="errors">`, which shows itself. A reader sees what went wrong; a headless test reads
 * the element from the dumped DOM.
 */
export const ERROR_RECORDER_SCRIPT = `(function () {
  'use strict';
  var out = document.getElementById('errors');
  function record(text) {
    out.hidden = false;
    out.textContent += text + '\\n';
  }
  window.addEventListener('error', function (event) {
    if (event instanceof ErrorEvent) {
      record('error: ' + event.message + ' (' + event.filename + ':' + event.lineno + ')');
    } else {
      var target = event.target || {};
      record('failed to load: ' + (target.src || target.href || String(target.nodeName)));
    }
  }, true);
  window.addEventListener('unhandledrejection', function (event) {
    record('unhandled rejection: ' + String(event.reason));
  });
  document.addEventListener('securitypolicyviolation', function (event) {
    record('blocked by the page policy: ' + event.violatedDirective + ' ' + event.blockedURI);
  });
  ['error', 'warn'].forEach(function (level) {
    var original = console[level];
    console[level] = function () {
      record('console.' + level + ': ' + Array.prototype.map.call(arguments, String).join(' '));
      return original.apply(console, arguments);
    };
  });
})();`;

/**
 * Runs last: draws every box with a `data-chart` attribute from the page's data, switches the
 * run selector's box, and marks the body with how many charts it drew.
 */
export const CHART_BOOTSTRAP_SCRIPT = `(function () {
  'use strict';
  if (typeof echarts === 'undefined') {
    console.error('the chart library did not load');
    return;
  }
  var data = JSON.parse(document.getElementById('report-data').textContent);
  var drawn = [];
  function draw(box) {
    var id = box.getAttribute('data-chart');
    var option = data.charts[id];
    if (!option) {
      console.error('no chart data for ' + id);
      return;
    }
    var chart = echarts.getInstanceByDom(box) || echarts.init(box, null, { renderer: 'canvas' });
    chart.setOption(option, true);
    if (drawn.indexOf(chart) < 0) drawn.push(chart);
  }
  Array.prototype.forEach.call(document.querySelectorAll('[data-chart]'), draw);
  Array.prototype.forEach.call(document.querySelectorAll('select[data-chart-box]'), function (select) {
    select.addEventListener('change', function () {
      var box = document.getElementById(select.getAttribute('data-chart-box'));
      box.setAttribute('data-chart', select.value);
      draw(box);
    });
  });
  window.addEventListener('resize', function () {
    drawn.forEach(function (chart) { chart.resize(); });
  });
  document.body.setAttribute('data-charts-drawn', String(drawn.length));
})();`;

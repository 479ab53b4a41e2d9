// ringlink click-to-call for amoCRM / Kommo: a click on a phone number in amoCRM asks ringlink to call it.
//
// The widget sends POST <ringlink_url>/amocrm/click as a form (a "simple" cross-origin request: no preflight)
// with the token from its settings, the amoCRM user who clicked and the number. ringlink rings that user's
// extension (from [amocrm.extensions]) and, once it is picked up, dials the number; it records the call in
// amoCRM as an outgoing call of that user when it ends. The answer is JSON: 200 {"status": "dialling" |
// "already_dialled", "call_id"} or 4xx/5xx {"error"} (README, "Click-to-call from amoCRM").
define(['jquery'], function ($) {
  return function () {
    var self = this;

    function say(text, error) {
      var notifications = window.APP && APP.notifications;
      if (notifications && typeof notifications.show_message === 'function') {
        notifications.show_message({ header: self.i18n('widget').name, text: text });
      } else if (error) {
        window.console && console.warn('ringlink: ' + text);
      }
    }

    function click(number) {
      var settings = self.get_settings();
      var base = String(settings.ringlink_url || '').replace(/\/+$/, '');
      if (!base || !settings.token) {
        say(self.i18n('messages').failed + ': ringlink_url / token', true);
        return;
      }
      var form = new URLSearchParams();
      form.set('token', settings.token);
      form.set('user_id', String(APP.constant('user').id));
      form.set('phone', String(number));
      // One id per click: should the request be sent again, ringlink dials nothing twice.
      form.set('click_id', Date.now().toString(36) + '-' + Math.random().toString(36).slice(2, 10));
      fetch(base + '/amocrm/click', { method: 'POST', body: form })
        .then(function (response) {
          return response.json().then(function (answer) {
            if (response.ok) {
              say(self.i18n('messages').dialling, false);
            } else {
              say(self.i18n('messages').failed + ': ' + (answer.error || response.status), true);
            }
          });
        })
        .catch(function (e) {
          say(self.i18n('messages').failed + ': ' + e, true);
        });
    }

    this.callbacks = {
      render: function () {
        return true;
      },
      init: function () {
        // amoCRM calls this on a click on any phone number it shows; params.value is the number.
        self.add_action('phone', function (params) {
          click(params.value);
        });
        return true;
      },
      bind_actions: function () {
        return true;
      },
      settings: function () {
        return true;
      },
      onSave: function () {
        return true;
      },
      destroy: function () {},
    };
    return this;
  };
});

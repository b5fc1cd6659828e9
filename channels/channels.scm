;; The guix channel, pinned. The image copies this file to
;; /root/.config/guix/channels.scm, so a plain `guix pull` stays on this commit.
;; The weekly pin-bump workflow (.github/workflows/pin-bump.yml) moves the commit below.
(list (channel
        (name 'guix)
        (url "https://codeberg.org/guix/guix.git")
        (branch "master")
        (commit "d759a1922126909b6097e245631669cf0b368b57")
        (introduction
         (make-channel-introduction
          "9edb3f66fd807b096b48283debdcddccfea34bad"
          (openpgp-fingerprint
           "BBB0 2DDF 2CEA F6A8 0D1D  E643 A2A0 6DF2 A33A 54FA")))))
